"""Evidence frames show the hit's plate and no other: the rest is painted over before a frame is kept.

A whole frame sent with a hit may hold the plates of other vehicles, which are not hits and must not
leave the unit. Every other plate the detector found in that frame (at its lowest score, including
plates too small or too doubtful to read) is covered with a solid patch a little larger than the
plate, and so is everything outside the region of interest, where no plate is looked for at all.
Plates the detector does not see at all can still show; the crop-only evidence mode has no such risk.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from edge.types import Detection, Point, box_iou

_MARGIN = 0.25  # each covered plate grows by this share of its size on every side
_FILL = (96, 96, 96)  # flat grey: nothing left to sharpen or de-blur


def evidence_frame(image: np.ndarray, keep: Detection, detections: Sequence[Detection],
                   roi: Sequence[Point] | None = None) -> np.ndarray:
    """A copy of `image` in which only `keep`'s plate stays legible (see the module doc).

    `detections` are all plates found in this frame; boxes overlapping `keep` by half or more are the
    same plate (a second, looser box) and stay.
    """
    out = image.copy()
    if roi:
        outside = np.full(image.shape[:2], 255, np.uint8)
        cv2.fillPoly(outside, [np.round(np.asarray(roi, np.float64)).astype(np.int32)], 0)
        out[outside > 0] = _FILL
    for d in detections:
        if d is keep or box_iou(d.box, keep.box) >= 0.5:
            continue
        quad = np.asarray(d.corners, np.float64)
        centre = quad.mean(axis=0)
        grown = centre + (quad - centre) * (1.0 + 2 * _MARGIN)
        cv2.fillConvexPoly(out, np.round(grown).astype(np.int32), _FILL)
    return out
