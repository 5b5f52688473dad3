"""Frame sources: video files and image folders (replay, tests), network streams and USB cameras
through OpenCV, and the Raspberry Pi camera through picamera2 (imported only when used).

A source yields `Frame`s with a monotonic and a UTC timestamp. File sources use the video's own
clock so that a replay gives the same passages however fast it runs; live sources use the
system clocks at capture.
"""

from __future__ import annotations

import inspect
import logging
import queue
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator, Protocol
from urllib.parse import urlsplit

import cv2
import numpy as np

from edge.credentials import mask_credentials
from edge.types import Frame

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


class SourceError(RuntimeError):
    """A source could not be opened or stopped delivering frames; the message names it."""


class FrameSource(Protocol):
    """What the capture loop needs from any camera or file."""

    label: str
    live: bool  # live sources are reopened with backoff when they drop; files simply end

    def open(self) -> None: ...
    def read(self) -> Frame | None: ...  # None: a finite source has ended
    def close(self) -> None: ...


class VideoFileSource:
    """A video file, read frame by frame with the video's own timestamps."""

    live = False

    def __init__(self, path: str | Path, fps_limit: float = 0, loop: bool = False, start_utc: datetime | None = None):
        self.path = Path(path)
        self.label = f"file:{self.path.name}"
        self.fps_limit = fps_limit
        self.loop = loop
        self._start_utc = start_utc
        self._cap: cv2.VideoCapture | None = None
        self._index = 0
        self._loop_start = 0  # index of the first frame of the current pass (loop)
        self._offset_ms = 0.0
        self._last_ms = 0.0
        self._frame_ms = 0.0
        self._next_due = 0.0

    def open(self) -> None:
        if not self.path.is_file():
            raise SourceError(f"{self.path}: video file not found")
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{self.path}: cannot decode video (unsupported or corrupt file)")
        fps = cap.get(cv2.CAP_PROP_FPS) or 0
        self._frame_ms = 1000.0 / fps if 0 < fps < 1000 else 40.0
        self._cap = cap
        if self._start_utc is None:
            self._start_utc = datetime.now(timezone.utc)
        self._next_due = time.monotonic()

    def read(self) -> Frame | None:
        if self._cap is None:
            raise SourceError(f"{self.path}: read before open")
        ok, image = self._cap.read()
        if not ok:
            if self.loop and self._index > 0:
                self._offset_ms = self._last_ms + self._frame_ms
                self._loop_start = self._index
                self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok, image = self._cap.read()
            if not ok:
                return None
        pos = self._cap.get(cv2.CAP_PROP_POS_MSEC)
        # Some containers report no position; fall back to the nominal frame rate. The frame number
        # counts from the start of this pass: the running index would add the whole length of every
        # earlier pass again after a loop (0..400 ms, then 1000 ms instead of 500 ms).
        local = self._index - self._loop_start
        local_ms = pos if pos > 0 or local == 0 else local * self._frame_ms
        ms = self._offset_ms + local_ms
        if ms <= self._last_ms and self._index > 0:
            ms = self._last_ms + self._frame_ms
        self._last_ms = ms
        self._pace()
        frame = Frame(image=image, index=self._index, mono_ms=ms,
                      utc=self._start_utc + timedelta(milliseconds=ms), source=self.label)
        self._index += 1
        return frame

    def _pace(self) -> None:
        if self.fps_limit > 0:
            now = time.monotonic()
            if self._next_due > now:
                time.sleep(self._next_due - now)
            self._next_due = max(now, self._next_due) + 1.0 / self.fps_limit

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class ImageFolderSource:
    """A folder of still images in name order, as if they were frames of a video."""

    live = False

    def __init__(self, path: str | Path, fps: float = 10.0, loop: bool = False, start_utc: datetime | None = None):
        self.path = Path(path)
        self.label = f"folder:{self.path.name}"
        self.fps = fps if fps > 0 else 10.0
        self.loop = loop
        self._files: list[Path] = []
        self._pos = 0
        self._index = 0
        self._start_utc = start_utc

    def open(self) -> None:
        if not self.path.is_dir():
            raise SourceError(f"{self.path}: image folder not found")
        self._files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self._files:
            raise SourceError(f"{self.path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in folder")
        if self._start_utc is None:
            self._start_utc = datetime.now(timezone.utc)

    def read(self) -> Frame | None:
        while True:
            if self._pos >= len(self._files):
                if not self.loop:
                    return None
                self._pos = 0
            path = self._files[self._pos]
            self._pos += 1
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                log.warning("skipping unreadable image %s", path.name)
                continue
            ms = self._index * 1000.0 / self.fps
            frame = Frame(image=image, index=self._index, mono_ms=ms,
                          utc=self._start_utc + timedelta(milliseconds=ms), source=self.label)
            self._index += 1
            return frame

    def close(self) -> None:
        self._files = []


# FFmpeg gets its own open/read timeouts and this long past them to give up by itself, before the
# watchdog gives up on the call
_WATCHDOG_GRACE_S = 2.0
DEFAULT_READ_TIMEOUT_S = 10.0  # a camera's single open or read that takes longer has failed


class _CaptureThread:
    """One cv2.VideoCapture that lives in its own daemon thread: opened, read and released there,
    while the caller waits for each step with a timeout.

    OpenCV cannot bound every call: a V4L2 driver that hangs (camera unplugged mid-frame), or FFmpeg
    blocked on a pipe, never returns, and the capture thread used to hang with it: no error, no
    reconnect. Here the caller gives up after its timeout; the thread releases the capture once the
    stuck call returns, and as a daemon thread it does not keep the process from exiting."""

    def __init__(self, open_capture: Callable[[], cv2.VideoCapture | None], name: str):
        self._open_capture = open_capture  # returns an opened capture, or None
        self._requests: queue.SimpleQueue[bool] = queue.SimpleQueue()  # True: read a frame, False: release
        self._replies: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._released = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.stuck = False  # a call was given up on; nothing more is asked of this capture

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        cap = None
        try:
            try:
                cap = self._open_capture()
            except Exception as e:  # handed to the caller, raised in its thread
                self._replies.put(e)
                return
            self._replies.put(cap is not None)
            if cap is None:
                return
            while self._requests.get():
                try:
                    self._replies.put(cap.read())
                except Exception as e:
                    self._replies.put(e)
        finally:
            if cap is not None:
                cap.release()
            self._released.set()

    def _reply(self, timeout: float):
        try:
            reply = self._replies.get(timeout=timeout)
        except queue.Empty:
            self.stuck = True
            raise TimeoutError from None
        if isinstance(reply, Exception):
            raise reply
        return reply

    def start(self, timeout: float) -> bool:
        """Open the capture; False when OpenCV could not. TimeoutError when opening did not return."""
        self._thread.start()
        return self._reply(timeout)

    def read(self, timeout: float) -> tuple[bool, np.ndarray | None]:
        """cap.read(); TimeoutError when it did not return in time (or an earlier call did not)."""
        if self.stuck:
            raise TimeoutError
        self._requests.put(True)
        return self._reply(timeout)

    def stop(self, timeout: float) -> bool:
        """Release the capture and end the thread; True when that happened within `timeout`. A stuck
        call is not waited for: the release follows when it returns."""
        self._requests.put(False)
        return self._released.wait(0 if self.stuck else timeout)


class OpenCVStreamSource:
    """An RTSP/HTTP stream or a V4L2 (USB) camera opened with OpenCV; stamped with the system clocks.

    Every OpenCV call runs under a watchdog (`_CaptureThread`): a camera that stops answering is a
    SourceError after `read_timeout_s` (plus a little for FFmpeg, which has its own timeouts), so the
    capture loop reports it and reopens the camera, however deeply the call is stuck."""

    live = True

    def __init__(self, target: str | int, label: str, width: int | None = None, height: int | None = None,
                 read_timeout_s: float = DEFAULT_READ_TIMEOUT_S):
        self.target = target
        self.label = label
        self.width = width
        self.height = height
        self.read_timeout_s = read_timeout_s
        self._cap: _CaptureThread | None = None
        self._blocked: _CaptureThread | None = None  # one given up on, whose call has not returned yet
        self._index = 0

    def _v4l2(self) -> bool:
        return isinstance(self.target, int) or self.target.startswith("/dev/")

    def _watchdog_s(self) -> float:
        return self.read_timeout_s if self._v4l2() else self.read_timeout_s + _WATCHDOG_GRACE_S

    def _open_capture(self) -> cv2.VideoCapture | None:
        """(In the capture's own thread.) The opened and configured capture, or None."""
        if self._v4l2():
            # no timeout parameters here: OpenCV refuses to open with any the backend does not use, and a
            # hung driver call is not bounded by them anyway. The watchdog is the bound.
            cap = cv2.VideoCapture(self.target, cv2.CAP_V4L2)
        else:
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.read_timeout_s * 1000),
                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.read_timeout_s * 1000)]
            cap = cv2.VideoCapture(self.target, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            return None
        if self.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        if self.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        return cap

    def open(self) -> None:
        self.close()
        if self._blocked is not None:
            if self._blocked.alive:
                # another open would hang (or find the device busy) the same way, leaving one more thread behind
                raise SourceError(f"{self.label}: the camera has still not returned from the call given up on "
                                  "(driver hang?); not reopened until it does")
            self._blocked = None
        cap = _CaptureThread(self._open_capture, name=f"camera {self.label}")
        try:
            opened = cap.start(self._watchdog_s())
        except TimeoutError:
            self._give_up(cap)
            raise SourceError(f"{self.label}: no answer within {self._watchdog_s():g} s while opening "
                              "(camera, network or driver hangs)") from None
        if not opened:
            raise SourceError(f"{self.label}: cannot open stream (unreachable, refused or not a video)")
        self._cap = cap

    def read(self) -> Frame | None:
        if self._cap is None:
            raise SourceError(f"{self.label}: read before open")
        try:
            ok, image = self._cap.read(self._watchdog_s())
        except TimeoutError:
            raise SourceError(f"{self.label}: no frame for {self._watchdog_s():g} s (camera stalled or "
                              "unplugged, or its driver hangs)") from None
        if not ok or image is None:
            raise SourceError(f"{self.label}: stream stopped delivering frames")
        frame = Frame(image=image, index=self._index, mono_ms=time.monotonic() * 1000.0,
                      utc=datetime.now(timezone.utc), source=self.label)
        self._index += 1
        return frame

    def close(self) -> None:
        if self._cap is not None:
            cap, self._cap = self._cap, None
            self._give_up(cap)

    def _give_up(self, cap: _CaptureThread) -> None:
        if not cap.stop(self._watchdog_s()):
            log.info("%s: the camera is released once its pending call returns", self.label)
            self._blocked = cap


def _call_within(fn: Callable[[], object], timeout_s: float, name: str) -> object:
    """fn() run in a daemon thread; its result or exception, or TimeoutError when it has not
    returned within timeout_s (the thread is left to finish, or to hang, on its own)."""
    box: queue.SimpleQueue[tuple[bool, object]] = queue.SimpleQueue()

    def run() -> None:
        try:
            box.put((True, fn()))
        except Exception as e:  # handed to the caller, raised in its thread
            box.put((False, e))

    threading.Thread(target=run, name=name, daemon=True).start()
    try:
        ok, value = box.get(timeout=timeout_s)
    except queue.Empty:
        raise TimeoutError from None
    if not ok:
        raise value  # type: ignore[misc]
    return value


class PiCameraSource:
    """The Raspberry Pi camera through picamera2, which exists only on the Pi."""

    live = True

    def __init__(self, camera_num: int = 0, width: int | None = None, height: int | None = None,
                 read_timeout_s: float = DEFAULT_READ_TIMEOUT_S):
        self.camera_num = camera_num
        self.size = (width or 1920, height or 1080)
        self.label = f"picamera:{camera_num}"
        self.read_timeout_s = read_timeout_s
        self._cam = None
        self._index = 0
        self._wait_timeout = False  # whether this picamera2's wait() takes a timeout
        self._stuck = False  # a capture call never returned: nothing more is asked of this camera

    def open(self) -> None:
        try:
            from picamera2 import Picamera2  # noqa: PLC0415 - Pi-only dependency
        except ImportError:
            raise SourceError(f"{self.label}: picamera2 is not installed (Raspberry Pi OS: apt install python3-picamera2)") from None
        cam = None
        try:
            cam = Picamera2(self.camera_num)
            # picamera2 names formats by libcamera's (little-endian) convention: "RGB888" arrays hold
            # [B, G, R] per pixel, i.e. OpenCV's BGR, while "BGR888" holds [R, G, B] and would hand the
            # whole pipeline red and blue swapped (Picamera2 manual, appendix A).
            cam.configure(cam.create_video_configuration(main={"size": self.size, "format": "RGB888"}))
            cam.start()
        except Exception as e:  # picamera2 raises many kinds; name the camera and the reason
            # A camera that was acquired but failed to configure or start stays claimed until it is
            # closed: every retry would then fail with "device busy" and the camera never came back.
            if cam is not None:
                self._close_camera(cam)
            raise SourceError(f"{self.label}: cannot start camera: {e}") from None
        try:
            self._wait_timeout = "timeout" in inspect.signature(cam.wait).parameters
        except (AttributeError, TypeError, ValueError):
            self._wait_timeout = False
        if not self._wait_timeout:
            log.info("%s: this picamera2 cannot wait with a timeout; each capture runs in a watchdog thread",
                     self.label)
        self._cam = cam
        self._stuck = False

    def read(self) -> Frame | None:
        if self._cam is None:
            raise SourceError(f"{self.label}: read before open")
        if self._stuck:
            raise SourceError(f"{self.label}: camera stalled (an earlier capture never returned)")
        cam = self._cam
        try:
            # capture_array() with no timeout blocks forever when the camera stops delivering
            # (cable, sensor or ISP fault); a bounded wait turns that into a reconnect.
            if self._wait_timeout:
                job = cam.capture_array("main", wait=False)
                image = cam.wait(job, timeout=self.read_timeout_s)
            else:  # an older picamera2: the blocking call runs in a thread we can stop waiting for
                image = _call_within(lambda: cam.capture_array("main"), self.read_timeout_s, f"{self.label} capture")
        except TimeoutError:
            self._stuck = not self._wait_timeout
            raise SourceError(f"{self.label}: no frame for {self.read_timeout_s:g} s (camera stalled)") from None
        except Exception as e:
            raise SourceError(f"{self.label}: capture failed: {e}") from None
        frame = Frame(image=np.ascontiguousarray(image[:, :, :3]), index=self._index,
                      mono_ms=time.monotonic() * 1000.0, utc=datetime.now(timezone.utc), source=self.label)
        self._index += 1
        return frame

    def close(self) -> None:
        if self._cam is not None:
            cam, self._cam = self._cam, None
            if not self._stuck:
                self._close_camera(cam)
                return
            try:  # a camera whose capture never returned may not stop either: do not hang with it
                _call_within(lambda: self._close_camera(cam), self.read_timeout_s, f"{self.label} close")
            except TimeoutError:
                log.warning("%s: the stalled camera did not close within %g s", self.label, self.read_timeout_s)

    def _close_camera(self, cam) -> None:
        # close() even when stop() fails: an unclosed camera stays claimed and cannot be reopened.
        try:
            cam.stop()
        except Exception as e:
            log.warning("%s: stopping the camera failed: %s", self.label, e)
        try:
            cam.close()
        except Exception as e:
            log.warning("%s: closing the camera failed: %s", self.label, e)


def make_source(source: str, *, width: int | None = None, height: int | None = None, fps: float = 0,
                loop: bool = False, read_timeout_s: float = DEFAULT_READ_TIMEOUT_S) -> FrameSource:
    """Build the source a config `camera.source` string names (validated already by the config).
    `read_timeout_s` bounds each open and read of a camera, after which it counts as failed."""
    scheme = urlsplit(source).scheme if ":" in source else ""
    if scheme == "file":
        rest = source.split(":", 1)[1]
        path = Path(urlsplit(source).path if rest.startswith("//") else rest)
        if path.is_dir():
            return ImageFolderSource(path, fps=fps or 10.0, loop=loop)
        return VideoFileSource(path, fps_limit=fps, loop=loop)
    if scheme in ("rtsp", "http", "https"):
        return OpenCVStreamSource(source, mask_credentials(source), width, height, read_timeout_s)
    if scheme == "v4l2":
        dev = source.split(":", 1)[1] or "/dev/video0"
        target: str | int = int(dev) if dev.isdigit() else dev
        return OpenCVStreamSource(target, f"v4l2:{dev}", width, height, read_timeout_s)
    if scheme == "picamera":
        num = source.split(":", 1)[1] or "0"
        if not num.isdigit():
            raise SourceError(f"{source}: picamera source needs a camera number, e.g. picamera:0")
        return PiCameraSource(int(num), width, height, read_timeout_s)
    raise SourceError(f"{source!r}: unknown scheme {scheme!r}, expected rtsp, http, picamera, v4l2, file")


def source_for_path(path: str | Path) -> FrameSource:
    """A replay source for a path given on the command line: a video file or an image folder."""
    p = Path(path)
    return ImageFolderSource(p) if p.is_dir() else VideoFileSource(p)


def iterate(source: FrameSource) -> Iterator[Frame]:
    """Open a finite source and yield all its frames, closing it at the end."""
    source.open()
    try:
        while (frame := source.read()) is not None:
            yield frame
    finally:
        source.close()
