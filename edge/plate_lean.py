"""How far a plate leans in the image, measured from its pixels.

The detector's corners follow a rolled camera only partly (real frames turned 12 degrees gave quads
turned 3-8 degrees), so where the true lean matters (the corner refiner's level turn, the technician's
aiming figures) it is measured from the image: the plate's surroundings are turned through a range of
angles and the turn whose rows of horizontal edges (plate borders, character tops and bottoms) line up
best levels it. Coarse steps first, then fine steps around the best, to keep it near a millisecond.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import cv2
import numpy as np

LEAN_WIDTH = 120  # the region is scaled to this width first
LEAN_RANGE = 20.0  # degrees either way; a camera rolled further is out of any sensible range
COARSE_STEP, FINE_STEP = 2.0, 0.5
MAX_ROLL_DEGREES = 45.0  # camera.roll_degrees / --roll: a camera leaning further is mounted wrong


def check_roll(value) -> float:
    """A camera roll in degrees (camera.roll_degrees, --roll, PlateDetector.detect), checked once here."""
    try:
        roll = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"roll must be a number of degrees, got {value!r}") from None
    if not -MAX_ROLL_DEGREES <= roll <= MAX_ROLL_DEGREES:  # NaN fails too
        raise ValueError(f"roll must be within -{MAX_ROLL_DEGREES:g}..{MAX_ROLL_DEGREES:g} degrees, got {value}")
    return roll


def roll_argument(text: str) -> float:
    """argparse type of the --roll options: check_roll, its message shown as the option's error."""
    try:
        return check_roll(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def lean_degrees(image: np.ndarray, box: Sequence[float]) -> float:
    """Degrees the plate in box (x1 y1 x2 y2) leans, clockwise on screen positive."""
    x1, y1, x2, y2 = (float(v) for v in box)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half = max(x2 - x1, y2 - y1) * 0.6
    H, W = image.shape[:2]
    region = image[int(max(cy - half * 0.6, 0)):int(min(cy + half * 0.6, H)),
                   int(max(cx - half, 0)):int(min(cx + half, W))]
    if region.shape[0] < 4 or region.shape[1] < 4:
        return 0.0
    grey = cv2.cvtColor(region, cv2.COLOR_BGR2GRAY) if region.ndim == 3 else region
    k = LEAN_WIDTH / grey.shape[1]
    grey = cv2.resize(grey.astype(np.float32), None, fx=k, fy=k,
                      interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
    edges = np.abs(cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3))
    h, w = edges.shape

    def lined_up(angle: float) -> float:
        turned = cv2.warpAffine(edges, cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0), (w, h))
        return float(np.var(turned.sum(axis=1)))

    coarse = max(np.arange(-LEAN_RANGE, LEAN_RANGE + COARSE_STEP / 2, COARSE_STEP), key=lined_up)
    fine = np.arange(coarse - COARSE_STEP + FINE_STEP, coarse + COARSE_STEP, FINE_STEP)
    return float(max(fine, key=lined_up))  # turning it anticlockwise by this levels it
