"""A second look at doubtful detector boxes: a small crop classifier says plate or not plate.

The detector scores a box from a 416-px view of the whole frame, where a car badge, a grille or a
lamp cluster can look much like a plate. This model sees only the box with some of its
surroundings, cut from the original pixels, and was trained on the boxes the detector got wrong on
the training frames (scripts/train_verifier.py). `PlateDetector` asks it about boxes whose score
is not already sure, so it costs a fraction of a millisecond per doubtful box and nothing for the
rest.

`verifier_crop` is shared by training and serving so both cut the same crop.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge.context_crop import CropModel, context_crop

Box = Sequence[float]


def verifier_crop(image: np.ndarray, box: Box, height: int, width: int,
                  context_x: float, context_y: float) -> np.ndarray:
    """The box (x1 y1 x2 y2, original pixels) widened by context_x / context_y times its size around
    its centre, cut from image (edge pixels repeated outside it) and resized to height x width (BGR)."""
    return context_crop(image, box, height, width, context_x, context_y)[0]


class PlateVerifier(CropModel):
    """Probability that each box of a frame is a licence plate, from the ONNX plate verifier."""

    kind = "plate_verifier"

    def crop(self, image: np.ndarray, box: Box) -> np.ndarray:
        return self.cut(image, box)[0]

    def probabilities(self, image: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
        """P(plate) for each box of image (BGR uint8), in one batched model run."""
        if len(boxes) == 0:
            return np.zeros(0, np.float32)
        logits = self.run([self.crop(image, b) for b in boxes])
        return (1.0 / (1.0 + np.exp(-logits.reshape(-1).astype(np.float64)))).astype(np.float32)
