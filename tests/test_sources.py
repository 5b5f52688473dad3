"""Frame sources on real media: video file, image folder, an HTTP stream served by the test."""

from __future__ import annotations

import http.server
import shutil
import threading
import time
from datetime import timezone

import cv2
import pytest

from conftest import free_port
from edge.sources import ImageFolderSource, OpenCVStreamSource, SourceError, VideoFileSource, iterate, make_source
from media import PipeCamera, real_frames, write_video


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


def test_stream_labels_mask_credentials():
    assert make_source("rtsp://admin:pw@cam.local:554/s").label == "rtsp://***@cam.local:554/s"
    assert make_source("http://cam/video").label == "http://cam/video"


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


def within(seconds: float, fn):
    """fn() in a thread; its exception (or None), or AssertionError when it is still blocked after
    `seconds` (a hang fails the test instead of hanging the run; the thread is left to the pipe's unplug)."""
    outcome: list = []

    def run():
        try:
            fn()
            outcome.append(None)
        except Exception as e:
            outcome.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert outcome, f"still blocked after {seconds} s"
    return outcome[0]


def camera_threads(label: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"camera {label}"]


def test_a_camera_that_never_answers_the_open_is_an_error_in_bounded_time(tmp_path):
    # (a hung driver, or a pipe nobody writes to: OpenCV's open/read timeouts do not bound it, and the
    # capture thread hung for ever, reporting nothing)
    pipe = PipeCamera(tmp_path / "cam")  # nobody writes: an open blocks for ever
    src = OpenCVStreamSource(str(pipe.path), "pipe:cam", read_timeout_s=0.5)
    try:
        t0 = time.monotonic()
        error = within(15, src.open)
        assert isinstance(error, SourceError) and str(error) == \
            "pipe:cam: no answer within 2.5 s while opening (camera, network or driver hangs)"
        assert time.monotonic() - t0 < 6
        # while that call is stuck, no second one is started (each would leave a thread behind)
        error = within(2, src.open)
        assert isinstance(error, SourceError) and "still not returned" in str(error)
        assert len(camera_threads("pipe:cam")) == 1
    finally:
        pipe.close()
    assert wait_until(lambda: not camera_threads("pipe:cam")), "the stuck call returned, but its thread stays"


def test_a_camera_whose_read_blocks_is_an_error_naming_it(tmp_path):
    pipe = PipeCamera(tmp_path / "cam")
    pipe.serve()  # real frames, then silence with the pipe held open: the next read blocks
    src = OpenCVStreamSource(str(pipe.path), "pipe:cam", read_timeout_s=0.5)
    frames = []
    try:
        assert within(30, src.open) is None
        last_frame = [time.monotonic()]

        def read_until_stuck():
            while True:
                frames.append(src.read())
                last_frame[0] = time.monotonic()

        error = within(30, read_until_stuck)
        assert isinstance(error, SourceError)
        assert str(error) == "pipe:cam: no frame for 2.5 s (camera stalled or unplugged, or its driver hangs)"
        assert 2.4 < time.monotonic() - last_frame[0] < 6
        assert len(frames) > 50 and frames[0].image.shape == (360, 640, 3)
        assert within(2, src.close) is None  # close does not wait for the stuck read
    finally:
        pipe.close()
    assert wait_until(lambda: not camera_threads("pipe:cam")), "the capture is released once the read returns"


def wait_until(cond, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.05)
    return cond()


def test_labels_hide_passwords_that_url_parsing_misses():
    # urlsplit() ends the authority at the first '/', '?' or '#': such a password (typed unencoded)
    # was left whole in the label, which goes to logs, status and systemd; a bad port raised instead.
    for url in ("rtsp://admin:pa/ss@cam:554/s", "rtsp://admin:p#ss@cam:554/s", "rtsp://admin:p?ss@cam:554/s",
                "rtsp://admin:p@ss@cam:554/s"):
        assert make_source(url).label == "rtsp://***@cam:554/s", url
    assert make_source("rtsp://admin:pass@cam:bad/s").label == "rtsp://***@cam:bad/s"
    # MJPEG cameras that take credentials in the query (Foscam style)
    assert make_source("http://cam/videostream.cgi?user=admin&pwd=s3cret&rate=0").label == \
        "http://cam/videostream.cgi?user=***&pwd=***&rate=0"
    assert make_source("rtsp://cam/s?channel=1&subtype=0").label == "rtsp://cam/s?channel=1&subtype=0"


def test_video_file_loop_keeps_the_frame_spacing(tmp_path):
    video = write_video(tmp_path / "v.mp4", n=5, fps=10)
    src = VideoFileSource(video, loop=True)
    src.open()
    times = [src.read().mono_ms for _ in range(12)]
    src.close()
    # a loop continues the clock one frame on (0..400, 500..900, ...), not a whole pass later
    assert times == pytest.approx([i * 100.0 for i in range(12)], abs=1.0), times


# ----- Raspberry Pi camera: picamera2 exists only on a Pi, so a stand-in module plays it -----

import sys  # noqa: E402
import types  # noqa: E402

import numpy as np  # noqa: E402

from edge.sources import PiCameraSource  # noqa: E402


class FakePicamera2:
    """Follows picamera2's API: configure/start/stop/close, capture_array(wait=False) -> job,
    wait(job, timeout) -> array or TimeoutError. `plan` says what each camera opened does."""

    made: list = []
    plan: list = []

    def __init__(self, num=0):
        self.step = FakePicamera2.plan.pop(0) if FakePicamera2.plan else "ok"
        self.config = None
        self.closed = False
        FakePicamera2.made.append(self)
        if FakePicamera2.made and sum(not c.closed for c in FakePicamera2.made) > 1:
            raise RuntimeError("Device or resource busy")  # libcamera: the camera is still claimed

    def create_video_configuration(self, main):
        return {"main": dict(main)}

    def configure(self, config):
        self.config = config

    def start(self):
        if self.step == "fail_start":
            raise RuntimeError("failed to start camera")

    def _array(self):
        # RGB888 is [B, G, R] per pixel (OpenCV order); BGR888 is [R, G, B]. The scene is pure red.
        fmt = self.config["main"]["format"]
        w, h = self.config["main"]["size"]
        pixel = {"RGB888": (0, 0, 255), "BGR888": (255, 0, 0)}[fmt]
        return np.full((h, w, 3), pixel, np.uint8)

    def capture_array(self, name="main", wait=None, signal_function=None):
        if wait is False:
            return "job"
        if self.step == "stall":  # a blocking capture on a stalled camera never returns; stop at 3 s here
            time.sleep(3)
        return self._array()

    def wait(self, job, timeout=None):
        if self.step == "stall":
            time.sleep(timeout)
            raise TimeoutError()
        return self._array()

    def stop(self):
        if self.step == "fail_stop":
            raise RuntimeError("stop failed")

    def close(self):
        self.closed = True


@pytest.fixture
def picamera2(monkeypatch):
    FakePicamera2.made, FakePicamera2.plan = [], []
    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=FakePicamera2))
    return FakePicamera2


def test_picamera_frames_are_bgr(picamera2):
    src = make_source("picamera:0", width=64, height=48)
    src.open()
    frame = src.read()
    src.close()
    assert frame.image.shape == (48, 64, 3)
    assert tuple(frame.image[0, 0]) == (0, 0, 255)  # red in OpenCV's BGR order, not swapped to blue
    assert picamera2.made[0].config["main"]["format"] == "RGB888"


def test_picamera_that_fails_to_start_is_released_so_a_retry_can_open_it(picamera2):
    picamera2.plan = ["fail_start", "ok"]
    src = PiCameraSource(0, 64, 48)
    with pytest.raises(SourceError, match="picamera:0: cannot start camera: failed to start camera"):
        src.open()
    assert picamera2.made[0].closed
    src.open()  # the retry gets the camera (it was "busy" for ever before)
    assert src.read().image.shape == (48, 64, 3)
    src.close()


def test_picamera_is_closed_even_when_stop_fails(picamera2):
    picamera2.plan = ["fail_stop", "ok"]
    src = PiCameraSource(0, 64, 48)
    src.open()
    src.close()
    assert picamera2.made[0].closed
    src.open()
    src.close()


def _read_gives_up_in_time(src: PiCameraSource) -> None:
    """A read of the stalled camera (read_timeout_s 0.3) fails naming it, well before the stall ends."""
    t0 = time.monotonic()
    with pytest.raises(SourceError, match="picamera:0: no frame for 0.3 s"):
        src.read()
    assert time.monotonic() - t0 < 2.0


def test_stalled_picamera_read_times_out(picamera2):
    picamera2.plan = ["stall"]
    src = PiCameraSource(0, 64, 48, read_timeout_s=0.3)
    src.open()
    _read_gives_up_in_time(src)
    src.close()


def test_stalled_picamera_without_a_wait_timeout_times_out_too(monkeypatch):
    """An older picamera2 whose wait() takes no timeout: the capture used to block for ever on a
    stalled camera. It now runs in a watchdog thread; the camera is then left alone and reopened."""

    class OlderPicamera2(FakePicamera2):
        def wait(self, job):  # no timeout parameter
            return self._array()

    FakePicamera2.made, FakePicamera2.plan = [], ["stall", "ok"]
    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=OlderPicamera2))
    src = PiCameraSource(0, 64, 48, read_timeout_s=0.3)
    src.open()
    _read_gives_up_in_time(src)
    with pytest.raises(SourceError, match="stalled"):  # no second call into a camera still stuck in one
        src.read()
    src.close()
    assert FakePicamera2.made[0].closed
    src.open()  # the reconnect gets a working camera
    frame = src.read()
    assert frame.image.shape == (48, 64, 3) and tuple(frame.image[0, 0]) == (0, 0, 255)
    src.close()
