"""Capture thread: drop-oldest queue, end of finite sources, reconnect with backoff of live streams."""

from __future__ import annotations

import threading
import time

from conftest import free_port
from edge.capture import Capture, DropOldestQueue
from edge.sources import VideoFileSource, make_source
from media import write_video
from test_sources import MjpegServer


def test_queue_drops_oldest_and_counts():
    q = DropOldestQueue(3)
    for i in range(7):
        q.put(i)
    assert q.dropped == 4
    assert [q.get(0) for _ in range(3)] == [4, 5, 6]
    assert q.get(0.01) is None


def test_queue_put_never_blocks_when_consumer_is_slow():
    q = DropOldestQueue(2)
    t0 = time.perf_counter()
    for i in range(10000):
        q.put(i)
    assert time.perf_counter() - t0 < 2.0  # generous: the point is it never waits for a consumer
    assert q.dropped == 9998 and len(q) == 2


def test_queue_get_wakes_on_put_and_on_close():
    q = DropOldestQueue(2)
    got = []
    t = threading.Thread(target=lambda: got.append(q.get(5)))
    t.start()
    q.put("x")
    t.join(2)
    assert got == ["x"]
    q.close()
    assert q.get(5) is None


def test_capture_delivers_every_frame_when_consumer_keeps_up(tmp_path):
    video = write_video(tmp_path / "v.mp4", n=10)
    cap = Capture(VideoFileSource(video), queue_size=64).start()
    frames = []
    while not cap.ended:
        f = cap.get(1.0)
        if f is not None:
            frames.append(f)
    cap.stop()
    assert [f.index for f in frames] == list(range(10))
    assert cap.stats.state == "ended" and cap.stats.dropped == 0


def test_capture_drops_oldest_when_inference_is_slow(tmp_path):
    video = write_video(tmp_path / "v.mp4", n=12)
    cap = Capture(VideoFileSource(video), queue_size=2).start()
    time.sleep(1.0)  # inference "busy": capture runs ahead and must not block
    frames = []
    while not cap.ended:
        f = cap.get(1.0)
        if f is not None:
            frames.append(f)
    cap.stop()
    assert [f.index for f in frames] == [10, 11]  # the newest survive
    assert cap.stats.dropped == 10 and cap.stats.frames == 12


def test_live_stream_reconnects_with_backoff_and_keeps_running():
    port = free_port()
    states = []
    src = make_source(f"http://127.0.0.1:{port}/video.mjpg")
    src.read_timeout_s = 2
    cap = Capture(src, queue_size=64, backoff_initial_s=0.2, backoff_max_s=0.4,
                  on_state=lambda s, e: states.append(s)).start()
    try:
        time.sleep(1.0)
        assert cap.stats.state == "reconnecting" and cap.stats.frames == 0  # camera not there yet
        server = MjpegServer(port, frames=5)  # camera appears; each connection gives 5 frames then drops
        try:
            deadline = time.monotonic() + 20
            while cap.stats.frames < 10 and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            server.close()
        assert cap.stats.frames >= 10, "capture did not reconnect after the stream dropped"
        assert cap.stats.reconnects >= 2
        assert "streaming" in states and "reconnecting" in states
    finally:
        cap.stop()
    assert cap.stats.state == "stopped"


# ----- failures of a live camera: fake sources with real frames, so each failure mode is exact -----

import logging  # noqa: E402
from datetime import datetime, timezone  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from edge.types import Frame  # noqa: E402
from media import real_frames  # noqa: E402

SECRET_URL = "rtsp://admin:hunter2@10.0.0.5:554/stream1"


class ScriptedLiveSource:
    """A live camera whose every read follows a script: an image, an exception to raise, or an
    Event to block on (as cv2.VideoCapture.read does on a dead stream)."""

    live = True
    label = "rtsp://10.0.0.5:554/stream1"

    def __init__(self, script):
        self.script = list(script)
        self.image = cv2.resize(cv2.imread(str(real_frames(1)[0])), (320, 180))
        self.opens = self.closes = 0
        self.is_open = False
        self.index = 0

    def open(self):
        self.opens += 1
        self.is_open = True

    def read(self):
        time.sleep(0.002)  # a camera's pace, roughly
        step = self.script.pop(0) if self.script else self.image
        if isinstance(step, threading.Event):
            step.wait(10)
            raise RuntimeError(f"read failed on {SECRET_URL}")
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, str) and step == "good":
            step = self.image
        frame = Frame(image=step, index=self.index, mono_ms=time.monotonic() * 1000,
                      utc=datetime.now(timezone.utc), source=self.label)
        self.index += 1
        return frame

    def close(self):
        self.closes += 1
        self.is_open = False


def wait_for(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.02)
    return cond()


def test_unexpected_exception_is_logged_without_password_and_the_camera_reopened(caplog):
    # cv2.error / RuntimeError / OSError from a read used to kill the capture thread: the state
    # stayed "streaming", the queue closed (so `ended` said a live camera had ended) and nothing reconnected.
    src = ScriptedLiveSource(["good", RuntimeError(f"decoder crashed on {SECRET_URL}")])
    states = []
    with caplog.at_level(logging.WARNING):
        cap = Capture(src, queue_size=64, backoff_initial_s=0.05, backoff_max_s=0.1,
                      on_state=lambda s, e: states.append((s, e))).start()
        try:
            assert wait_for(lambda: cap.stats.frames >= 5), "capture died on an unexpected exception"
            assert src.opens >= 2 and src.closes >= 1  # closed and reopened, not leaked
            assert cap.stats.state == "streaming" and not cap.ended
        finally:
            cap.stop()
    assert ("reconnecting", "rtsp://10.0.0.5:554/stream1: unexpected RuntimeError: decoder crashed on "
            "rtsp://***@10.0.0.5:554/stream1") in states
    assert "decoder crashed" in caplog.text and "Traceback" in caplog.text
    assert "hunter2" not in caplog.text and all("hunter2" not in e for _, e in states)


def test_unexpected_exception_in_a_file_source_ends_it_with_the_reason(tmp_path):
    class Broken(VideoFileSource):
        def read(self):
            raise ValueError("bad packet")

    cap = Capture(Broken(write_video(tmp_path / "v.mp4", n=3)), queue_size=4).start()
    assert wait_for(lambda: cap.ended)
    cap.stop()
    assert cap.stats.state == "ended" and "bad packet" in cap.stats.last_error


def test_stop_while_blocked_in_read_stays_stopped_and_closes_the_source():
    release = threading.Event()
    src = ScriptedLiveSource(["good", release])  # the second read blocks, then fails
    states = []
    cap = Capture(src, queue_size=4, backoff_initial_s=0.05,
                  on_state=lambda s, e: states.append(s)).start()
    assert wait_for(lambda: cap.stats.frames == 1)
    t0 = time.monotonic()
    cap.stop(timeout=0.3)
    assert time.monotonic() - t0 < 2.0  # stop() does not hang on the blocked read
    assert cap.stats.state == "stopped"
    release.set()  # the read comes back (with an error) after stop()
    assert wait_for(lambda: not cap._thread.is_alive())
    # "stopped" stays the last word: no late "reconnecting", no reopen, and the source is released
    assert cap.stats.state == "stopped" and states[-1] == "stopped"
    assert src.opens == 1 and src.closes == 1 and not src.is_open


def test_corrupt_frames_are_skipped_or_repaired_never_passed_on(caplog):
    good = ScriptedLiveSource([]).image
    script = [None, np.zeros((0, 0, 3), np.uint8), good.astype(np.uint16), good[:, :, :2],
              cv2.cvtColor(good, cv2.COLOR_BGR2GRAY), cv2.cvtColor(good, cv2.COLOR_BGR2BGRA), "good"]
    src = ScriptedLiveSource(script)
    with caplog.at_level(logging.WARNING):
        cap = Capture(src, queue_size=64).start()
        try:
            frames = []
            while len(frames) < 3:
                f = cap.get(2.0)
                assert f is not None, "no frames"
                frames.append(f)
        finally:
            cap.stop()
    # the detector raises on anything but uint8 H x W x 3, which would end the daemon's main loop
    assert all(f.image.dtype == np.uint8 and f.image.shape == (180, 320, 3) for f in frames)
    assert cap.stats.bad_frames == 4 and src.opens == 1
    assert "unusable frame" in caplog.text


def test_a_live_source_delivering_only_unusable_frames_is_reopened():
    src = ScriptedLiveSource([None] * 30)
    errors = []
    cap = Capture(src, queue_size=4, backoff_initial_s=0.05, on_state=lambda s, e: errors.append(e)).start()
    try:
        assert wait_for(lambda: cap.stats.frames > 0)
        assert src.opens == 2 and any("25 unusable frames in a row" in e for e in errors)
    finally:
        cap.stop()


def test_resolution_change_mid_stream_is_reported(caplog):
    src = ScriptedLiveSource(["good", "good"])
    src.script.append(cv2.resize(src.image, (640, 360)))
    with caplog.at_level(logging.WARNING):
        cap = Capture(src, queue_size=64).start()
        try:
            assert wait_for(lambda: cap.stats.frames >= 4)
        finally:
            cap.stop()
    assert cap.stats.resolution_changes >= 1
    assert "changed resolution from 320x180 to 640x360" in caplog.text


def test_stop_before_start_is_harmless(tmp_path):
    cap = Capture(VideoFileSource(write_video(tmp_path / "v.mp4", n=2)))
    cap.stop()
    assert cap.stats.state == "stopped" and cap.ended


def test_a_camera_whose_read_hangs_is_reported_by_name_and_reopened(tmp_path):
    # A USB camera unplugged mid-frame, or a hung driver, blocks cv2's read for ever: the capture thread
    # hung with it, the status said "streaming" and nothing reconnected. A named pipe blocks the same way.
    from media import PipeCamera
    from edge.sources import OpenCVStreamSource

    pipe = PipeCamera(tmp_path / "cam")
    pipe.serve()  # each opener: real frames, then silence with the pipe held open, until unplugged
    states = []
    src = OpenCVStreamSource(str(pipe.path), "pipe:cam", read_timeout_s=0.5)
    cap = Capture(src, queue_size=4, backoff_initial_s=0.2, backoff_max_s=0.5,
                  on_state=lambda s, e: states.append((s, e))).start()
    try:
        assert wait_for(lambda: cap.stats.frames > 50, 30), "no frames from the pipe"
        assert wait_for(lambda: cap.stats.state == "reconnecting", 10), "a read that hangs is never reported"
        assert ("reconnecting", "pipe:cam: no frame for 2.5 s (camera stalled or unplugged, or its driver hangs)") \
            in states
        stalled_at = cap.stats.frames
        pipe.unplug()  # the stuck read returns (end of stream), and the next open is served again
        assert wait_for(lambda: cap.stats.frames > stalled_at + 50, 30), "the camera was not reopened"
        assert cap.stats.state == "streaming" and cap.stats.reconnects >= 1
    finally:
        cap.stop()
        pipe.close()
