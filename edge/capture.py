"""Capture runs in its own thread, apart from inference.

Frames go through a bounded queue that drops the *oldest* frame when inference falls behind, so
capture never blocks and the newest view of the road is always the next one processed. A live
source that drops is reopened with exponential backoff while the daemon keeps running.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from edge.sources import FrameSource, SourceError
from edge.types import Frame

log = logging.getLogger(__name__)


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

    state: str = "starting"  # starting, streaming, reconnecting, ended, stopped
    frames: int = 0
    dropped: int = 0
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
        self._thread.join(timeout)
        self.queue.close()
        if self.stats.state not in ("ended",):
            self._set_state("stopped")

    def _set_state(self, state: str, error: str = "") -> None:
        if state != self.stats.state:
            self.stats.state = state
            self.stats.last_error = error
            if self._on_state:
                self._on_state(state, error)

    def _run(self) -> None:
        delay = self.backoff_initial_s
        try:
            while not self._stop.is_set():
                try:
                    self.source.open()
                except SourceError as e:
                    if not self.source.live:
                        log.error("frame source failed: %s", e)
                        self._set_state("ended", str(e))
                        return
                    self._reconnect_wait(str(e), delay)
                    delay = min(delay * 2, self.backoff_max_s)
                    continue
                if self.stats.reconnects:
                    log.info("frame source %s reopened", self.source.label)
                self._set_state("streaming")
                frames_before = self.stats.frames
                try:
                    outcome = self._pump()
                except SourceError as e:
                    self.source.close()
                    if self.stats.frames > frames_before:  # it worked for a while: start backoff afresh
                        delay = self.backoff_initial_s
                    self._reconnect_wait(str(e), delay)
                    delay = min(delay * 2, self.backoff_max_s)
                    continue
                self.source.close()
                if outcome is None:  # a finite source ended
                    self._set_state("ended")
                    return
        finally:
            self.queue.close()

    def _pump(self) -> bool | None:
        """Move frames into the queue until stopped (True) or the source ends (None)."""
        while not self._stop.is_set():
            frame = self.source.read()
            if frame is None:
                return None
            self.stats.frames += 1
            self.stats.last_frame_mono = time.monotonic()
            self.queue.put(frame)
            self.stats.dropped = self.queue.dropped
        return True

    def _reconnect_wait(self, error: str, delay: float) -> None:
        self.stats.reconnects += 1
        log.warning("frame source %s unavailable (%s); retrying in %.1f s", self.source.label, error, delay)
        self._set_state("reconnecting", error)
        self._stop.wait(delay)
