"""Frame sources on real media: video file, image folder, an HTTP stream served by the test."""

from __future__ import annotations

import http.server
import shutil
import threading
from datetime import timezone

import cv2
import pytest

from conftest import free_port
from edge.sources import (ImageFolderSource, OpenCVStreamSource, SourceError, VideoFileSource, iterate,
                          make_source, redact)
from media import real_frames, write_video


def test_video_file_frames_carry_both_clocks(tmp_path):
    video = write_video(tmp_path / "v.mp4", n=12, fps=10)
    frames = list(iterate(VideoFileSource(video)))
    assert len(frames) == 12
    assert [f.index for f in frames] == list(range(12))
    assert frames[0].image.shape == (360, 640, 3)
    gaps = [b.mono_ms - a.mono_ms for a, b in zip(frames, frames[1:])]
    assert all(abs(g - 100.0) < 1.0 for g in gaps), gaps  # the video's own 10 fps clock
    assert all(f.utc.tzinfo is timezone.utc for f in frames)
    assert (frames[-1].utc - frames[0].utc).total_seconds() == pytest.approx(1.1, abs=0.01)


def test_video_file_loops_with_increasing_time(tmp_path):
    video = write_video(tmp_path / "v.mp4", n=5, fps=10)
    src = VideoFileSource(video, loop=True)
    src.open()
    frames = [src.read() for _ in range(12)]
    src.close()
    times = [f.mono_ms for f in frames]
    assert times == sorted(times) and len(set(times)) == 12


def test_missing_and_corrupt_video_name_the_file(tmp_path):
    with pytest.raises(SourceError, match="video file not found"):
        VideoFileSource(tmp_path / "nope.mp4").open()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00not a video" * 100)
    with pytest.raises(SourceError, match="bad.mp4: cannot decode video"):
        VideoFileSource(bad).open()


def test_image_folder_in_name_order(tmp_path):
    for i, f in enumerate(real_frames(4)):
        shutil.copy(f, tmp_path / f"{i:03d}.jpg")
    (tmp_path / "notes.txt").write_text("ignored")
    frames = list(iterate(ImageFolderSource(tmp_path, fps=5)))
    assert len(frames) == 4
    assert frames[1].mono_ms - frames[0].mono_ms == pytest.approx(200.0)
    assert frames[0].image.shape == (540, 960, 3)


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(SourceError, match="no images"):
        ImageFolderSource(tmp_path).open()


def test_make_source_schemes(tmp_path):
    video = write_video(tmp_path / "v.mp4", n=3)
    assert isinstance(make_source(f"file:{video}"), VideoFileSource)
    assert isinstance(make_source(f"file://{video}"), VideoFileSource)
    assert isinstance(make_source(f"file:{tmp_path}"), ImageFolderSource)
    rtsp = make_source("rtsp://user:secret@10.0.0.5:554/stream1")
    assert isinstance(rtsp, OpenCVStreamSource) and "secret" not in rtsp.label
    assert make_source("v4l2:/dev/video0").label == "v4l2:/dev/video0"
    with pytest.raises(SourceError, match="unknown scheme 'rtps'"):
        make_source("rtps://cam/1")


def test_redact_removes_credentials():
    assert redact("rtsp://admin:pw@cam.local:554/s") == "rtsp://cam.local:554/s"
    assert redact("http://cam/video") == "http://cam/video"


class MjpegServer:
    """An IP-camera-like MJPEG stream (multipart/x-mixed-replace) of real frames; each client gets
    `frames` JPEGs and then the connection closes, as when a camera drops."""

    def __init__(self, port: int, frames: int = 8):
        jpegs = [cv2.imencode(".jpg", cv2.resize(cv2.imread(str(f)), (640, 360)))[1].tobytes()
                 for f in real_frames(frames)]

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                for jpg in jpegs:
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n")
                    self.wfile.write(f"Content-Length: {len(jpg)}\r\n\r\n".encode())
                    self.wfile.write(jpg + b"\r\n")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_http_mjpeg_stream_source_reads_and_reports_a_drop():
    port = free_port()
    server = MjpegServer(port, frames=8)
    try:
        src = make_source(f"http://127.0.0.1:{port}/video.mjpg")
        assert src.live
        src.open()
        frames = [src.read() for _ in range(6)]
        assert all(f.image.shape == (360, 640, 3) for f in frames)
        assert frames[-1].mono_ms >= frames[0].mono_ms
        with pytest.raises(SourceError, match="stopped delivering frames"):
            for _ in range(10):  # the camera closes the connection: a live source reports a drop
                src.read()
        src.close()
    finally:
        server.close()


def test_unreachable_stream_is_a_clear_error():
    src = OpenCVStreamSource(f"http://127.0.0.1:{free_port()}/none.mp4", "http://127.0.0.1/none.mp4",
                             read_timeout_s=2)
    with pytest.raises(SourceError, match="cannot open stream"):
        src.open()
