"""The one rule that masks URL credentials in labels, logs, config errors and audit entries."""

from __future__ import annotations

import pytest

from edge.credentials import mask_credentials


@pytest.mark.parametrize("text, masked", [
    ("rtsp://admin:pw@cam.local:554/s", "rtsp://***@cam.local:554/s"),
    # a password URL parsing takes apart wrongly: '/', '#', '?' or '@' typed unencoded, a bad port
    ("rtsp://admin:pa/ss@cam:554/s", "rtsp://***@cam:554/s"),
    ("rtsp://admin:p#ss@cam:554/s", "rtsp://***@cam:554/s"),
    ("rtsp://admin:p?ss@cam:554/s", "rtsp://***@cam:554/s"),
    ("rtsp://admin:p@ss@cam:554/s", "rtsp://***@cam:554/s"),
    ("rtsp://admin:pass@cam:bad/s", "rtsp://***@cam:bad/s"),
    # half-written or typo'd URLs, as a config error echoes them
    ("rtps://admin:S3cret@host/stream", "rtps://***@host/stream"),
    ("rtps:admin:S3cret@host", "rtps:***@host"),
    ("rtsp//admin:S3cret@host", "rtsp//***@host"),
    ("rtps://S3cret@host/s", "rtps://***@host/s"),  # a lone user part may be a token
    # credentials in the query (Foscam-style MJPEG cameras)
    ("http://cam/videostream.cgi?user=admin&pwd=s3cret&rate=0", "http://cam/videostream.cgi?user=***&pwd=***&rate=0"),
    # nothing to hide
    ("http://cam/video", "http://cam/video"),
    ("rtsp://cam/s?channel=1&subtype=0", "rtsp://cam/s?channel=1&subtype=0"),
    ("mail ops@example.org about it", "mail ops@example.org about it"),
])
def test_urls_lose_their_credentials(text, masked):
    assert mask_credentials(text) == masked


def test_every_url_in_a_message_or_traceback_is_masked():
    text = ("camera state: read failed on rtsp://admin:hunter2@10.0.0.5:554/s1 (was 'http://u:pw/x@cam/v'),\n"
            "  File \"x.py\", line 3\n    @decorated\n")
    out = mask_credentials(text)
    assert "hunter2" not in out and "pw/x" not in out
    assert out == ("camera state: read failed on rtsp://***@10.0.0.5:554/s1 (was 'http://***@cam/v'),\n"
                   "  File \"x.py\", line 3\n    @decorated\n")
