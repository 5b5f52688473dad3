"""Cut a box and some of its surroundings out of a frame at a fixed size.

Shared by the plate verifier and the corner refiner, in training and in serving, so every side cuts
the same pixels; the refiner also needs the cut region to map its corners back to the frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from edge.modelcontract import ModelContract, ModelContractError, make_session

Box = Sequence[float]


def context_region(box: Box, context_x: float, context_y: float) -> tuple[int, int, int, int]:
    """The box (x1 y1 x2 y2) widened by context_x / context_y times its size around its centre, as
    whole pixels (rx1 ry1 rx2 ry2, end exclusive); it may reach outside the frame."""
    x1, y1, x2, y2 = (float(v) for v in box)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    bw, bh = max(x2 - x1, 4.0) * context_x, max(y2 - y1, 2.0) * context_y
    rx1, ry1 = int(np.floor(cx - bw / 2)), int(np.floor(cy - bh / 2))
    rx2, ry2 = max(int(np.ceil(cx + bw / 2)), rx1 + 2), max(int(np.ceil(cy + bh / 2)), ry1 + 2)
    return rx1, ry1, rx2, ry2


def context_crop(image: np.ndarray, box: Box, height: int, width: int, context_x: float,
                 context_y: float) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The context region of box cut from image (edge pixels repeated outside it), resized to
    height x width (BGR), and the region itself (see context_region)."""
    H, W = image.shape[:2]
    rx1, ry1, rx2, ry2 = region = context_region(box, context_x, context_y)
    crop = image[max(ry1, 0):max(min(ry2, H), 0), max(rx1, 0):max(min(rx2, W), 0)]
    if crop.size == 0:
        return np.full((height, width, 3), 114, np.uint8), region
    pad = (max(-ry1, 0), max(ry2 - H, 0), max(-rx1, 0), max(rx2 - W, 0))
    if any(pad):
        crop = cv2.copyMakeBorder(crop, *pad, cv2.BORDER_REPLICATE)
    return fit(crop, height, width), region


def fit(crop: np.ndarray, height: int, width: int) -> np.ndarray:
    """crop resized to height x width: area averaging when it shrinks (no aliasing), else linear."""
    shrink = crop.shape[1] > width or crop.shape[0] > height
    return cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


class CropModel:
    """An ONNX model over fixed-size context crops of boxes (the plate verifier, the corner refiner):
    its contract, the crop geometry from its metadata and the onnxruntime session."""

    kind = ""

    def __init__(self, model_path: str | Path, threads: int = 1):
        self.contract = ModelContract.from_onnx(model_path)
        c = self.contract
        if c.kind != self.kind:
            raise ModelContractError(f"{model_path}: metadata kind is {c.kind!r}, expected {self.kind!r}")
        try:
            self.context_x = float(c.require("context_x"))
            self.context_y = float(c.require("context_y"))
        except ValueError as exc:
            raise ModelContractError(f"{model_path}: {self.kind} metadata is not a number: {exc}") from None
        self.height, self.width = c.input_height, c.input_width
        self.rgb = c.get("channel_order", "RGB").upper() == "RGB"
        self.mean = np.asarray(c.mean, np.float32) * 255.0
        self.inv_std = 1.0 / (np.asarray(c.std, np.float32) * 255.0)
        self.session = make_session(model_path, threads)
        self.input_name = self.session.get_inputs()[0].name

    @property
    def version(self) -> str:
        return self.contract.version

    def cut(self, image: np.ndarray, box: Sequence[float]) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        """The model's crop of box and the region it was cut from."""
        return context_crop(image, box, self.height, self.width, self.context_x, self.context_y)

    def batch(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """N crops (BGR uint8, height x width) -> the model input, N x 3 x height x width float32."""
        x = np.stack(crops).astype(np.float32)
        if self.rgb:
            x = x[..., ::-1]
        x = (x - self.mean) * self.inv_std
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def run(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        return self.session.run(None, {self.input_name: self.batch(crops)})[0]
