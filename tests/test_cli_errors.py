"""Bad input to the `anpr-edge` tools gives a named error and a non-zero exit, never a traceback."""

from __future__ import annotations

import signal
import subprocess
import sys

import cv2
import pytest

import edge.cli
from conftest import ROOT
from unit_support import DEMO


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout)


def test_read_of_an_empty_folder_says_so(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    res = cli("read", str(tmp_path))
    assert res.returncode == 1 and res.stdout == ""
    assert f"{tmp_path}: no images (.bmp, .jpeg, .jpg, .png, .webp) in folder" in res.stderr


def test_read_of_a_missing_file_says_not_found(tmp_path):
    res = cli("read", str(tmp_path / "missing.jpg"))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert f"{tmp_path / 'missing.jpg'}: file not found" in res.stderr


def test_replay_of_a_file_that_is_no_video_is_an_error(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    res = cli("replay", str(bad))
    assert res.returncode == 2 and res.stdout == ""
    assert f"{bad}: no frame could be decoded" in res.stderr and "Traceback" not in res.stderr


def test_ctrl_c_during_replay_exits_130_and_says_how_far_it_got(tmp_path):
    # the demo three times over (an image folder): the Ctrl-C must land while frames are still being
    # read, also on a loaded machine where this test may be scheduled late after the first passage
    cap = cv2.VideoCapture(str(DEMO / "demo.mp4"))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    for i, frame in enumerate(frames * 3):
        cv2.imwrite(str(tmp_path / f"{i:05d}.jpg"), frame)
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "replay", "--json", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout.readline(), "replay printed no passage"  # it is in the frame loop now
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "replay: interrupted after" in err and "Traceback" not in err


def test_ctrl_c_while_starting_up_is_no_traceback(monkeypatch, capsys):
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(edge.cli, "build_parser", interrupted)
    assert edge.cli.main(["replay", "x.mp4"]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_snapshot_into_a_folder_that_is_a_file_is_named(tmp_path):
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "snap.jpg"
    res = cli("camera", "snapshot", "--source", str(DEMO / "demo.mp4"), "--skip", "0", "-o", str(out))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert f"cannot write {out}" in res.stderr


@pytest.mark.parametrize("option, value", [("--vehicles", "-1"), ("--vehicles", "0"), ("--window", "0"),
                                           ("--frames", "-2"), ("--every", "-1"), ("--every", "nan")])
def test_camera_aim_rejects_wrong_counts_by_name(option, value):
    res = cli("camera", "aim", "--source", str(DEMO / "demo.mp4"), option, value)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"argument {option}:" in res.stderr


def test_camera_snapshot_rejects_a_negative_skip(tmp_path):
    res = cli("camera", "snapshot", "--source", str(DEMO / "demo.mp4"), "--skip", "-3", "-o", str(tmp_path / "s.jpg"))
    assert res.returncode == 2 and "argument --skip:" in res.stderr
    assert not (tmp_path / "s.jpg").exists()


def test_camera_without_a_source_is_a_usage_error():
    res = cli("camera", "aim", "--once")
    assert res.returncode == 2 and "give --config FILE or --source URL" in res.stderr


def test_a_port_out_of_range_is_an_argument_error_not_a_validation_dump():
    for args in (["hits", "--host", "127.0.0.1", "--port", "99999"],
                 ["lists", "publish", "--host", "127.0.0.1", "--port", "0"]):
        r = subprocess.run([sys.executable, "-m", "edge.cli", *args], capture_output=True, text=True, cwd=ROOT,
                           timeout=60)
        assert r.returncode == 2, (args, r.stderr)
        assert "--port" in r.stderr and "outside 1-65535" in r.stderr and "Traceback" not in r.stderr
        assert "validation error" not in r.stderr


def test_publishing_lists_to_a_broker_that_is_down_names_the_broker():
    import socket

    from edge.lists.sync import publish_blobs
    from edge.publisher import MqttConfig

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionError, match=f"127.0.0.1:{port}"):
        publish_blobs([("anpr/lists/x/snapshot", b"x", True)], MqttConfig(host="127.0.0.1", port=port))
