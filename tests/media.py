"""Real media for tests: short videos written from real frames of the shared data sets."""

from __future__ import annotations

import itertools
import os
import threading
from pathlib import Path

import cv2

from conftest import SHARED_DATA

RO_FRAMES = SHARED_DATA / "detect" / "ro_dashcam" / "images"


def real_frames(n: int, pattern: str = "dayride_type1_002_*.jpg") -> list[Path]:
    files = sorted(RO_FRAMES.glob(pattern))[:n]
    assert len(files) == n, f"expected {n} frames matching {pattern} in {RO_FRAMES}"
    return files


def write_video(path: Path, n: int = 12, fps: float = 10.0, size: tuple[int, int] = (640, 360)) -> Path:
    """An MPEG-4 video of n real dashcam frames (decoded again by the code under test)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened(), "OpenCV cannot write mp4v here"
    for f in real_frames(n):
        writer.write(cv2.resize(cv2.imread(str(f)), size))
    writer.release()
    return path


class PipeCamera:
    """A camera that stops answering, made real with a named pipe (FIFO) that OpenCV reads through FFmpeg.

    Opening the pipe blocks until a writer comes, and a read blocks once the data written so far is
    used up; FFmpeg's own timeouts bound neither, just like a hung V4L2 driver. Without `serve()`
    nobody writes (an open that never returns). With it, whoever opens the pipe gets an MJPEG stream
    of real frames (more than FFmpeg probes before it opens) and then silence, the pipe held open,
    until `unplug()` ends that connection; the next opener is served the same way."""

    def __init__(self, path: Path, megabytes: float = 6.0, size: tuple[int, int] = (640, 360)):
        os.mkfifo(path)
        self.path = path
        self.megabytes = megabytes
        self._jpegs = [cv2.imencode(".jpg", cv2.resize(cv2.imread(str(f)), size))[1].tobytes()
                       for f in real_frames(12)]
        self._unplugged = threading.Event()
        self._closed = False

    def serve(self) -> None:
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._closed:
            fd = os.open(self.path, os.O_WRONLY)  # blocks until the camera is opened
            try:
                if self._closed:
                    return
                self._unplugged.clear()
                written = 0
                for jpg in itertools.cycle(self._jpegs):
                    written += os.write(fd, jpg)
                    if written >= self.megabytes * 1e6:
                        break
                self._unplugged.wait()  # silence, the pipe held open: the reader waits for more
            except BrokenPipeError:  # the reader went away: serve the next one
                pass
            finally:
                os.close(fd)

    def unplug(self) -> None:
        """End the current connection: a read blocked on it returns (end of stream)."""
        self._unplugged.set()

    def close(self) -> None:
        """Stop serving, and let through every open blocked on the pipe (it sees the end at once)."""
        self._closed = True
        self._unplugged.set()
        for flags in (os.O_RDONLY | os.O_NONBLOCK, os.O_WRONLY | os.O_NONBLOCK):  # the server's open, a reader's
            try:
                os.close(os.open(self.path, flags))
            except OSError:  # ENXIO: nobody has the pipe open for reading
                pass
