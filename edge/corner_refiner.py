"""A closer look at where a detected plate's four corners are.

The detector places corners from a 416-px view of the whole frame, where a plate 60 px wide spans
about 40 px, so its corners are a few per cent of the plate width off, and the recognizer reads the
crop those corners straighten. This small model sees only the box and some of its surroundings, cut
from the original pixels at 48 x 144, and says where the corners are (scripts/train_corner_refiner.py,
trained on rendered plates warped into real training frames, whose corners are exact).
`PlateDetector` asks it about every box it returns, in one batch.

The refiner learnt from plates that are nearly level (perspective pulls of an upright plate), so a
plate the detector sees turned (a rolled camera, a sloping road, a leaning motorcycle) is first
turned level in the crop: the crop is cut along the detector's own quad, the refiner places the
corners there, and they are turned back. Plates within `LEVEL_DEGREES` of level are cut as they are.

A refined quad is used only when it is a plausible plate: convex, and spanning a box that overlaps
the detector's box by IoU >= 0.5; otherwise the detector's corners stay, so the refiner can make a
box more exact but never lose it.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from edge.context_crop import CropModel, context_region, fit
from edge.plate_lean import lean_degrees
from edge.types import box_iou, tilt_degrees

Box = Sequence[float]


class CornerRefiner(CropModel):
    """Four plate corners (TL TR BR BL, original pixels) per detector box, from the ONNX corner refiner."""

    kind = "corner_refiner"

    def __init__(self, model_path, threads: int = 1, level_degrees: float | None = None,
                 lean_from_pixels: bool = False, pixel_lean_min_width: float = 0.0):
        """level_degrees: plates turned more than this are looked at turned level (default
        LEVEL_DEGREES; infinity never turns a crop). lean_from_pixels: the turn is measured from the
        image (edge.plate_lean) instead of from the detector's quad, for boxes at least
        pixel_lean_min_width pixels wide (narrower plates give noisy pixel angles; they keep the quad's)."""
        super().__init__(model_path, threads)
        self.level_degrees = LEVEL_DEGREES if level_degrees is None else float(level_degrees)
        self.lean_from_pixels = lean_from_pixels
        self.pixel_lean_min_width = float(pixel_lean_min_width)

    def corners(self, image: np.ndarray, boxes: Sequence[Box],
                quads: Sequence[np.ndarray] | None = None) -> np.ndarray:
        """N x 4 x 2 corners (TL TR BR BL, pixels of image, not clipped) for the N boxes, in one batched run.

        quads: the detector's corners of each box (default: the boxes' own corners); a plate they
        show turned by more than level_degrees is looked at turned level (see the module doc)."""
        if len(boxes) == 0:
            return np.zeros((0, 4, 2), np.float64)
        crops, back = [], []
        for i, b in enumerate(boxes):
            x1, y1, x2, y2 = (float(v) for v in b)
            quad = np.asarray(quads[i] if quads is not None else ((x1, y1), (x2, y1), (x2, y2), (x1, y2)),
                              np.float64)
            from_pixels = self.lean_from_pixels and x2 - x1 >= self.pixel_lean_min_width
            angle = lean_degrees(image, b) if from_pixels else tilt_degrees(quad)
            if abs(angle) > self.level_degrees:
                crop, to_frame = self._cut_level(image, quad, angle)
            else:
                crop, (rx1, ry1, rx2, ry2) = self.cut(image, b)
                to_frame = np.array([[rx2 - rx1, 0.0, rx1], [0.0, ry2 - ry1, ry1]])
            crops.append(crop)
            back.append(to_frame)
        out = self.run(crops).reshape(-1, 4, 2).astype(np.float64)
        return np.stack([o @ m[:, :2].T + m[:, 2] for o, m in zip(out, back)])

    def _cut_level(self, image: np.ndarray, quad: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
        """The crop of a plate turned level by -angle about its centre, and the 2 x 3 map from the
        model's unit crop coordinates back to image pixels."""
        centre = quad.mean(axis=0)
        level = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, 1.0)  # image -> level
        q = quad @ level[:, :2].T + level[:, 2]
        rx1, ry1, rx2, ry2 = context_region((*q.min(0), *q.max(0)), self.context_x, self.context_y)
        to_patch = level.copy()
        to_patch[:, 2] -= (rx1, ry1)
        patch = cv2.warpAffine(image, to_patch, (rx2 - rx1, ry2 - ry1), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
        unit_to_patch = np.array([[rx2 - rx1, 0.0, 0.0], [0.0, ry2 - ry1, 0.0], [0.0, 0.0, 1.0]])
        patch_to_image = np.vstack([cv2.invertAffineTransform(to_patch), [0.0, 0.0, 1.0]])
        return fit(patch, self.height, self.width), (patch_to_image @ unit_to_patch)[:2]


LEVEL_DEGREES = 3.0  # plates turned less than this are cut as they are (the refiner handles that much)


def plausible(quad: np.ndarray, box: Box, min_iou: float = 0.5) -> bool:
    """A refined quad may replace the detector's: finite, convex, and its box overlaps the detector's."""
    if not np.all(np.isfinite(quad)) or not cv2.isContourConvex(quad.astype(np.float32).reshape(-1, 1, 2)):
        return False
    return box_iou((*quad.min(0), *quad.max(0)), box) >= min_iou
