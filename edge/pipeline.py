"""Per-frame processing: motion gate → detector → recognizer → tracker, giving closed passages.

The pipeline only knows the stages' small interfaces, so each can be swapped or tested alone.
It keeps counters (never texts) for status and benchmarks.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from edge.redact import evidence_frame
from edge.types import Detection, Frame, Observation, Passage, PlateRead, Point

log = logging.getLogger(__name__)
_LOG_ERRORS_EVERY_S = 60.0  # a stage failing on every frame must not flood the log of a unit running for months


class Detector(Protocol):
    def detect(self, image: np.ndarray, roi: Sequence[Point] | None = None, roll: float = 0.0) -> list[Detection]: ...


class Recognizer(Protocol):
    def rectify(self, image: np.ndarray, corners: Sequence[Point]) -> np.ndarray: ...
    def read_crop(self, crop: np.ndarray) -> PlateRead: ...


class Tracker(Protocol):
    active: int  # open tracks
    settled: bool  # every open track has already given its passage

    def wants_read(self, detection: Detection, frame: Frame) -> bool: ...
    def update(self, frame: Frame, observations: list[Observation]) -> list[Passage]: ...
    def flush(self) -> list[Passage]: ...


class Gate(Protocol):
    def changed(self, frame: Frame) -> bool: ...


@dataclass
class PipelineStats:
    """Counters and timings of the inference side (no plate content)."""

    frames: int = 0
    skipped_detection: int = 0  # frames where nothing moved and no track was open
    detections: int = 0
    reads: int = 0
    skipped_reads: int = 0  # detections of confidently read tracks that were not read again
    passages: int = 0
    errors: int = 0  # frames (or plate reads) lost to an exception in a stage
    detect_ms: float = 0.0  # totals, for averages
    read_ms: float = 0.0
    track_ms: float = 0.0
    last_infer_ms: float = 0.0

    def as_dict(self) -> dict:
        n = max(self.frames, 1)
        return {
            "frames": self.frames,
            "skipped_detection": self.skipped_detection,
            "detections": self.detections,
            "reads": self.reads,
            "skipped_reads": self.skipped_reads,
            "passages": self.passages,
            "errors": self.errors,
            "detect_ms_avg": round(self.detect_ms / n, 2),
            "read_ms_avg": round(self.read_ms / max(self.reads, 1), 2),
            "track_ms_avg": round(self.track_ms / n, 2),
            "last_infer_ms": round(self.last_infer_ms, 2),
        }


class Pipeline:
    """Turns frames into vehicle passages."""

    def __init__(self, detector: Detector, recognizer: Recognizer, tracker: Tracker, *,
                 motion: Gate | None = None, roi: Sequence[Point] | None = None, roll: float = 0.0,
                 min_score: float = 0.4, min_plate_width: float = 0, keep_frames: bool = False):
        self.detector = detector
        self.recognizer = recognizer
        self.tracker = tracker
        self.motion = motion
        self.roi = list(roi) if roi else None
        self.roll = float(roll)  # degrees the scene leans clockwise: the detector searches it turned level
        self.min_score = min_score
        self.min_plate_width = min_plate_width
        self.keep_frames = keep_frames  # keep the full frame with an observation (evidence mode 'frame')
        self.stats = PipelineStats()
        self._last_error_log = -_LOG_ERRORS_EVERY_S

    def process(self, frame: Frame) -> list[Passage]:
        """One frame in; the passages this frame closed out. An exception in a stage (a corrupt frame
        after a reconnect, a degenerate plate quad) costs that frame only: it is counted and logged
        (type and stage, never plate content), and the daemon's loop goes on with the next frame."""
        try:
            return self._process(frame)
        except Exception as e:  # noqa: BLE001 - the unit runs unattended: one bad frame must not stop it
            self._error("frame", e)
            return []

    def _error(self, stage: str, e: Exception) -> None:
        self.stats.errors += 1
        now = time.monotonic()
        if now - self._last_error_log >= _LOG_ERRORS_EVERY_S:
            self._last_error_log = now
            log.error("pipeline: %s failed (%s), skipped; %d error(s) so far", stage, type(e).__name__,
                      self.stats.errors)

    def _process(self, frame: Frame) -> list[Passage]:
        t0 = time.perf_counter()
        self.stats.frames += 1
        moved = self.motion.changed(frame) if self.motion is not None else True
        if not moved and (self.tracker.active == 0 or self.tracker.settled):
            # Nothing moved and nothing is waiting for a read (e.g. a parked car already reported):
            # skip detection; the motion gate still lets a frame through every max_idle_s.
            self.stats.skipped_detection += 1
            return []
        observations = self._observe(frame)
        t1 = time.perf_counter()
        passages = self.tracker.update(frame, observations)
        t2 = time.perf_counter()
        self.stats.track_ms += (t2 - t1) * 1000
        self.stats.passages += len(passages)
        self.stats.last_infer_ms = (t2 - t0) * 1000
        return passages

    def finish(self) -> list[Passage]:
        """Close every open track (end of a replay, or shutdown)."""
        passages = self.tracker.flush()
        self.stats.passages += len(passages)
        return passages

    def _observe(self, frame: Frame) -> list[Observation]:
        t0 = time.perf_counter()
        found = self.detector.detect(frame.image, roi=self.roi, roll=self.roll)
        detections = [d for d in found if d.score >= self.min_score and (d.box[2] - d.box[0]) >= self.min_plate_width]
        t1 = time.perf_counter()
        self.stats.detect_ms += (t1 - t0) * 1000
        self.stats.detections += len(detections)
        observations = []
        for det in detections:
            read = crop = None
            if self.tracker.wants_read(det, frame):
                t2 = time.perf_counter()
                try:
                    crop = self.recognizer.rectify(frame.image, det.corners)
                    read = self.recognizer.read_crop(crop)
                except Exception as e:  # noqa: BLE001 - one unreadable plate must not cost the frame's others
                    self._error("plate read", e)
                    read = crop = None
                self.stats.read_ms += (time.perf_counter() - t2) * 1000
                self.stats.reads += 1
            else:
                self.stats.skipped_reads += 1
            observations.append(Observation(
                detection=det, read=read, frame_index=frame.index, mono_ms=frame.mono_ms, utc=frame.utc,
                crop=crop,
                frame=evidence_frame(frame.image, det, found, self.roi) if self.keep_frames and read is not None
                else None,
            ))
        return observations

