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
from pathlib import Path

import cv2
import numpy as np

from edge.modelcontract import ModelContract, ModelContractError, make_session

Box = Sequence[float]


def verifier_crop(image: np.ndarray, box: Box, height: int, width: int,
                  context_x: float, context_y: float) -> np.ndarray:
    """The box (x1 y1 x2 y2, original pixels) widened by context_x / context_y times its size around
    its centre, cut from image (edge pixels repeated outside it) and resized to height x width (BGR)."""
    H, W = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    bw, bh = max(x2 - x1, 4.0) * context_x, max(y2 - y1, 2.0) * context_y
    rx1, ry1 = int(np.floor(cx - bw / 2)), int(np.floor(cy - bh / 2))
    rx2, ry2 = max(int(np.ceil(cx + bw / 2)), rx1 + 2), max(int(np.ceil(cy + bh / 2)), ry1 + 2)
    crop = image[max(ry1, 0):max(min(ry2, H), 0), max(rx1, 0):max(min(rx2, W), 0)]
    if crop.size == 0:
        return np.full((height, width, 3), 114, np.uint8)
    pad = (max(-ry1, 0), max(ry2 - H, 0), max(-rx1, 0), max(rx2 - W, 0))
    if any(pad):
        crop = cv2.copyMakeBorder(crop, *pad, cv2.BORDER_REPLICATE)
    shrink = crop.shape[1] > width or crop.shape[0] > height
    return cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


class PlateVerifier:
    """Probability that each box of a frame is a licence plate, from the ONNX plate verifier."""

    def __init__(self, model_path: str | Path, threads: int = 1):
        self.contract = ModelContract.from_onnx(model_path)
        c = self.contract
        if c.kind != "plate_verifier":
            raise ModelContractError(f"{model_path}: metadata kind is {c.kind!r}, expected 'plate_verifier'")
        try:
            self.context_x = float(c.require("context_x"))
            self.context_y = float(c.require("context_y"))
        except ValueError as exc:
            raise ModelContractError(f"{model_path}: verifier metadata is not a number: {exc}") from None
        self.height, self.width = c.input_height, c.input_width
        self.rgb = c.get("channel_order", "RGB").upper() == "RGB"
        self.mean = np.asarray(c.mean, np.float32) * 255.0
        self.inv_std = 1.0 / (np.asarray(c.std, np.float32) * 255.0)
        self.session = make_session(model_path, threads)
        self.input_name = self.session.get_inputs()[0].name

    @property
    def version(self) -> str:
        return self.contract.version

    def crop(self, image: np.ndarray, box: Box) -> np.ndarray:
        return verifier_crop(image, box, self.height, self.width, self.context_x, self.context_y)

    def batch(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """N crops (BGR uint8, height x width) -> the model input, N x 3 x height x width float32."""
        x = np.stack(crops).astype(np.float32)
        if self.rgb:
            x = x[..., ::-1]
        x = (x - self.mean) * self.inv_std
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def probabilities(self, image: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
        """P(plate) for each box of image (BGR uint8), in one batched model run."""
        if len(boxes) == 0:
            return np.zeros(0, np.float32)
        logits = self.session.run(None, {self.input_name: self.batch([self.crop(image, b) for b in boxes])})[0]
        return (1.0 / (1.0 + np.exp(-logits.reshape(-1).astype(np.float64)))).astype(np.float32)
