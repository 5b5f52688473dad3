"""Motion gating: skip the detector on frames where nothing in the scene moved.

A roadside camera watches an empty road most of the time; running the detector on identical
frames only burns CPU. The gate compares a tiny blurred grey copy of the frame with the last
frame it let through, so slow movement still accumulates until it counts. It is deliberately
cheap (well under a millisecond on a Pi for a 1080p frame after the resize).
"""

from __future__ import annotations

import cv2
import numpy as np
from pydantic import Field

from edge.configbase import Section
from edge.types import Frame


class MotionConfig(Section):
    enabled: bool = Field(True, description="Skip detection on frames where nothing moved (saves CPU on empty roads).")
    scale_width: int = Field(96, ge=16, le=640, description=(
        "Width in pixels of the grey thumbnail the frames are compared at; smaller is cheaper but misses "
        "small motion."))
    pixel_threshold: int = Field(18, ge=1, le=255, description=(
        "Grey-level difference (0-255) at which a thumbnail pixel counts as changed; above sensor noise."))
    min_changed_fraction: float = Field(0.002, ge=0, le=1, description=(
        "Share of thumbnail pixels that must change for the frame to count as moved (0.002 = 0.2%)."))
    max_idle_s: float = Field(2.0, ge=0, description=(
        "Let one frame through at least this often even when nothing moved, so a stopped car is still seen "
        "(0 = never force)."))


class MotionGate:
    """`changed(frame)` is True when the frame differs enough from the last frame let through."""

    def __init__(self, cfg: MotionConfig):
        self.cfg = cfg
        self._ref: np.ndarray | None = None  # thumbnail of the last frame let through
        self._ref_ms: float = 0.0

    def _thumb(self, image: np.ndarray) -> np.ndarray:
        if image.ndim not in (2, 3) or image.size == 0:
            raise ValueError(f"motion gate: frame image must be a non-empty H x W (x C) array, got shape {image.shape}")
        h, w = image.shape[:2]
        tw = min(self.cfg.scale_width, w)
        th = max(1, round(h * tw / w))
        small = cv2.resize(image, (tw, th), interpolation=cv2.INTER_AREA)
        if small.ndim == 3:
            small = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        return cv2.GaussianBlur(small, (3, 3), 0)

    def changed(self, frame: Frame) -> bool:
        if not self.cfg.enabled:
            return True
        thumb = self._thumb(frame.image)
        if self._ref is None or self._ref.shape != thumb.shape or frame.mono_ms < self._ref_ms:
            # first frame, another frame size (camera reconnect) or the clock went back (restarted source):
            # start over, else the idle frame would not come again until the clock caught up
            return self._accept(thumb, frame)
        if self.cfg.max_idle_s > 0 and frame.mono_ms - self._ref_ms >= self.cfg.max_idle_s * 1000:
            return self._accept(thumb, frame)
        diff = cv2.absdiff(thumb, self._ref)
        moved = np.count_nonzero(diff >= self.cfg.pixel_threshold) / diff.size
        if moved > self.cfg.min_changed_fraction:
            return self._accept(thumb, frame)
        return False

    def _accept(self, thumb: np.ndarray, frame: Frame) -> bool:
        self._ref = thumb
        self._ref_ms = frame.mono_ms
        return True
