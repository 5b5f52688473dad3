"""Capture runs in its own thread, apart from inference.

Frames go through a bounded queue that drops the *oldest* frame when inference falls behind, so
capture never blocks and the newest view of the road is always the next one processed. A live
source that drops is reopened with exponential backoff while the daemon keeps running.

Whatever a source raises, the capture thread logs it (credentials masked) and treats it as the
source failing; it never dies silently while the status still says "streaming". Frames that the
pipeline cannot take (None, empty, not uint8, odd channel counts) are repaired where that is lossless
(grey, BGRA) and otherwise skipped, so one bad frame cannot crash inference.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np

from edge.credentials import mask_credentials
from edge.sources import FrameSource, SourceError
from edge.types import Frame

log = logging.getLogger(__name__)

# A live source that delivers this many unusable frames in a row is reopened.
MAX_BAD_FRAMES = 25


class DropOldestQueue:
    """A bounded FIFO whose put never blocks: when full, the oldest item is discarded and counted."""

    def __init__(self, maxsize: int):
        if maxsize < 1:
            raise ValueError("queue size must be at least 1")
        self._items: deque = deque()
        self._maxsize = maxsize
        self._cond = threading.Condition()
        self.dropped = 0
        self.closed = False

    def put(self, item) -> None:
        with self._cond:
            if len(self._items) >= self._maxsize:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify()

    def get(self, timeout: float | None = None):
        """The oldest item, or None on timeout or when closed and empty."""
        with self._cond:
            if not self._items and not self.closed:
                self._cond.wait(timeout)
            return self._items.popleft() if self._items else None

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


@dataclass
class CaptureStats:
    """Counters for status and heartbeat; no image content."""

    state: str = "starting"  # starting, streaming, reconnecting, ended, stopped, failed
    frames: int = 0
    dropped: int = 0
    bad_frames: int = 0  # unusable frames skipped (None, empty, wrong dtype or shape)
    resolution_changes: int = 0
    reconnects: int = 0
    last_error: str = ""
    last_frame_mono: float = 0.0
    started_mono: float = field(default_factory=time.monotonic)


class Capture:
    """Reads a source in a background thread into a drop-oldest queue, reconnecting live sources."""

    def __init__(self, source: FrameSource, queue_size: int = 4, backoff_initial_s: float = 1.0,
                 backoff_max_s: float = 30.0, on_state: Callable[[str, str], None] | None = None):
        self.source = source
        self.queue = DropOldestQueue(queue_size)
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.stats = CaptureStats()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._on_state = on_state
        # state is set from the capture thread and from stop(); the lock keeps the check-and-set and
        # the order of on_state calls consistent ("stopped" is always the last word)
        self._state_lock = threading.RLock()
        self._size: tuple[int, int] | None = None  # (height, width) of the last good frame
        self._last_unexpected = ""  # its traceback is logged once, not on every retry

    def start(self) -> "Capture":
        self._thread.start()
        return self

    def get(self, timeout: float = 0.5) -> Frame | None:
        """Next frame for inference, or None (timeout, or the source ended)."""
        frame = self.queue.get(timeout)
        self.stats.dropped = self.queue.dropped
        return frame

    @property
    def ended(self) -> bool:
        """True when a finite source is exhausted and every frame has been taken."""
        return self.queue.closed and len(self.queue) == 0

    def stop(self, timeout: float = 3.0) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout)
            if self._thread.is_alive():
                # A read or open can block past any timeout we set (a driver or library stuck); the
                # thread closes the source when that call returns and does nothing else after.
                log.warning("frame source %s is still blocked; it is closed when the pending call returns",
                            self.source.label)
        self.queue.close()
        with self._state_lock:
            if self.stats.state not in ("ended", "failed"):
                self._set_state("stopped")

    def _set_state(self, state: str, error: str = "") -> None:
        with self._state_lock:
            # Once stopped, a capture thread that comes back late from a blocked read must not report
            # "reconnecting" or "streaming" (nor call on_state) for a capture that no longer runs.
            if self.stats.state == "stopped" or (self._stop.is_set() and state in ("streaming", "reconnecting")):
                return
            if state == self.stats.state:
                self.stats.last_error = error  # the latest reason, without repeating the callback
                return
            self.stats.state = state
            self.stats.last_error = error
            if self._on_state:
                try:
                    self._on_state(state, error)
                except Exception as e:  # a reporting problem must not end capture
                    log.warning("camera state callback failed: %s", mask_credentials(f"{type(e).__name__}: {e}"))

    def _describe(self, e: BaseException) -> str:
        """A one-line reason for an error of the source, credentials masked (RTSP URLs carry them).

        SourceErrors already name the source; anything else is unexpected and logged with its
        traceback (masked as well), since that is what finds the bug."""
        if isinstance(e, SourceError):
            return mask_credentials(str(e))
        text = mask_credentials(f"{self.source.label}: unexpected {type(e).__name__}: {e}")
        if text != self._last_unexpected:
            self._last_unexpected = text
            log.error("frame source failed: %s\n%s", text,
                      mask_credentials("".join(traceback.format_exception(e)).rstrip()))
        return text

    def _close_source(self) -> None:
        try:
            self.source.close()
        except Exception as e:
            log.warning("closing frame source %s failed: %s", self.source.label,
                        mask_credentials(f"{type(e).__name__}: {e}"))

    def _run(self) -> None:
        delay = self.backoff_initial_s
        try:
            while not self._stop.is_set():
                try:
                    self.source.open()
                except Exception as e:  # not only SourceError: cv2.error, OSError, a driver's own kinds
                    self._close_source()  # a half-opened source must not keep the camera
                    error = self._describe(e)
                    if not self.source.live:
                        if isinstance(e, SourceError):  # (unexpected ones are logged already)
                            log.error("frame source failed: %s", error)
                        self._set_state("ended", error)
                        return
                    self._reconnect_wait(error, delay)
                    delay = min(delay * 2, self.backoff_max_s)
                    continue
                if self.stats.reconnects:
                    log.info("frame source %s reopened", self.source.label)
                self._set_state("streaming")
                frames_before = self.stats.frames
                try:
                    outcome = self._pump()
                except Exception as e:  # an unexpected error used to kill the thread, state left "streaming"
                    self._close_source()
                    error = self._describe(e)
                    if not self.source.live:
                        if isinstance(e, SourceError):
                            log.error("frame source failed: %s", error)
                        self._set_state("ended", error)
                        return
                    if self.stats.frames > frames_before:  # it worked for a while: start backoff afresh
                        delay = self.backoff_initial_s
                    self._reconnect_wait(error, delay)
                    delay = min(delay * 2, self.backoff_max_s)
                    continue
                self._close_source()
                if outcome is None:  # a finite source ended
                    self._set_state("ended")
                    return
        except BaseException as e:  # a bug in capture itself: say so instead of dying silently
            error = mask_credentials(f"capture thread failed: {type(e).__name__}: {e}")
            log.error("%s\n%s", error, mask_credentials("".join(traceback.format_exception(e)).rstrip()))
            self._close_source()
            self._set_state("failed", error)
        finally:
            self.queue.close()

    def _pump(self) -> bool | None:
        """Move frames into the queue until stopped (True) or the source ends (None)."""
        bad_run = 0
        while not self._stop.is_set():
            frame = self.source.read()
            if frame is None:
                return None
            if self._stop.is_set():  # stopped while the read blocked: hand nothing on
                break
            image = usable_image(getattr(frame, "image", None))
            if image is None:
                self.stats.bad_frames += 1
                bad_run += 1
                if bad_run == 1:
                    log.warning("frame source %s delivered an unusable frame (%s); skipped",
                                self.source.label, _describe_image(getattr(frame, "image", None)))
                if self.source.live and bad_run >= MAX_BAD_FRAMES:
                    raise SourceError(f"{self.source.label}: {bad_run} unusable frames in a row")
                continue
            bad_run = 0
            if image is not frame.image:
                frame = dataclasses.replace(frame, image=image)
            size = image.shape[:2]
            if self._size is not None and size != self._size:
                # The ROI and the camera setup are in pixels of the old size: worth a loud line.
                self.stats.resolution_changes += 1
                log.warning("frame source %s changed resolution from %dx%d to %dx%d",
                            self.source.label, self._size[1], self._size[0], size[1], size[0])
            self._size = size
            self.stats.frames += 1
            self.stats.last_frame_mono = time.monotonic()
            self.queue.put(frame)
            self.stats.dropped = self.queue.dropped
        return True

    def _reconnect_wait(self, error: str, delay: float) -> None:
        if self._stop.is_set():
            return
        self.stats.reconnects += 1
        log.warning("frame source %s unavailable (%s); retrying in %.1f s", self.source.label, error, delay)
        self._set_state("reconnecting", error)
        self._stop.wait(delay)


def usable_image(image) -> np.ndarray | None:
    """`image` as the BGR uint8 H x W x 3 array the pipeline needs, or None when it cannot be one.

    The detector raises on anything else, and that exception would end the daemon's main loop: so a
    grey (H x W or H x W x 1) or BGRA frame is converted, and None, an empty or tiny frame, or one of
    another dtype (e.g. 16-bit raw) is refused."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim not in (2, 3):
        return None
    if image.shape[0] < 8 or image.shape[1] < 8:
        return None
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image if image.shape[2] == 3 else None


def _describe_image(image) -> str:
    if not isinstance(image, np.ndarray):
        return f"no image: {type(image).__name__}"
    return f"shape {image.shape}, dtype {image.dtype}"
