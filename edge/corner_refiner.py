"""A closer look at where a detected plate's four corners are.

The detector places corners from a 416-px view of the whole frame, where a plate 60 px wide spans
about 40 px, so its corners are a few per cent of the plate width off, and the recognizer reads the
crop those corners straighten. This small model sees only the box and some of its surroundings, cut
from the original pixels at 48 x 144, and says where the corners are (scripts/train_corner_refiner.py,
trained on rendered plates warped into real training frames, whose corners are exact).
`PlateDetector` asks it about every box it returns, in one batch.

A refined quad is used only when it is a plausible plate: convex, and spanning a box that overlaps
the detector's box by IoU >= 0.5; otherwise the detector's corners stay, so the refiner can make a
box more exact but never lose it.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from edge.context_crop import CropModel
from edge.types import box_iou

Box = Sequence[float]


class CornerRefiner(CropModel):
    """Four plate corners (TL TR BR BL, original pixels) per detector box, from the ONNX corner refiner."""

    kind = "corner_refiner"

    def corners(self, image: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
        """N x 4 x 2 corners (TL TR BR BL, pixels of image, not clipped) for the N boxes, in one batched run."""
        if len(boxes) == 0:
            return np.zeros((0, 4, 2), np.float64)
        cut = [self.cut(image, b) for b in boxes]
        out = self.run([c for c, _ in cut])
        regions = np.asarray([r for _, r in cut], np.float64)
        origin, size = regions[:, None, :2], (regions[:, 2:] - regions[:, :2])[:, None, :]
        return out.reshape(-1, 4, 2).astype(np.float64) * size + origin


def plausible(quad: np.ndarray, box: Box, min_iou: float = 0.5) -> bool:
    """A refined quad may replace the detector's: finite, convex, and its box overlaps the detector's."""
    if not np.all(np.isfinite(quad)) or not cv2.isContourConvex(quad.astype(np.float32).reshape(-1, 1, 2)):
        return False
    return box_iou((*quad.min(0), *quad.max(0)), box) >= min_iou
