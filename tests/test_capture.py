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
