"""Coloured marks on a plate that are not characters: coats of arms, inspection stickers, seals.

Plate characters are dark and colourless; Vienna's red-white-red arms, the arms of other Austrian
states, Swiss cantonal arms and Czech or German inspection stickers are coloured and sit in the
character rows. The recognizer reads a grey image, where such a mark can look like a letter
("W 1518 B" read as "WV1518B"). `paint_out_marks` covers small coloured regions of a light plate so
the crop can be read once more; the recognizer then keeps that read only when it is the first one
less the doubtful characters the marks produced. Yellow and other coloured plates are left alone
(shading on them looks like a mark), and so are grey (infrared) crops.
"""

from __future__ import annotations

import cv2
import numpy as np

_MIN_SATURATION = 90  # OpenCV HSV, 0-255: clearly coloured, not a tinted white
_MIN_VALUE = 70  # darker pixels are ink or shadow, whose hue is noise
_YELLOW = (15, 35)  # OpenCV hue range (0-180) of a yellow plate background
_MAX_BACKGROUND_SATURATION = 60  # the light part of the crop: white plates only
_MIN_TOTAL, _MAX_TOTAL = 0.01, 0.3  # share of coloured pixels: none worth painting / a coloured plate
_MAX_MARK_WIDTH = 0.25  # a mark is at most this share of the crop width (wider: car body, a strip of colour)
_MIN_MARK_AREA = 0.008  # share of the crop; smaller coloured specks are noise
_JOIN = 0.1  # coloured pieces closer than this share of the crop height are one mark
_MAX_MARKS = 4  # arms, a sticker or two, the EU strip; more coloured blobs are coloured characters


def paint_out_marks(crop: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The crop with its small coloured marks painted in the plate's background grey, and the mask
    (bool, H x W) of what was painted; None when there is nothing to paint (grey crops, plates
    without marks, plates coloured all over)."""
    if crop.ndim != 3 or crop.shape[2] != 3 or min(crop.shape[:2]) < 8:
        return None
    hsv = cv2.cvtColor(crop, cv2.COLOR_BGR2HSV)
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    coloured = (s > _MIN_SATURATION) & (v > _MIN_VALUE) & ~((h >= _YELLOW[0]) & (h <= _YELLOW[1]))
    if not _MIN_TOTAL <= coloured.mean() <= _MAX_TOTAL:
        return None
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    if np.median(s[grey >= np.percentile(grey, 70)]) > _MAX_BACKGROUND_SATURATION:
        return None
    height, width = coloured.shape
    # wide coloured pieces (Austria's red borders, a strip of car body) are never marks; drop them
    # first so they do not swallow a mark beside them
    n, labels, stats, _ = cv2.connectedComponentsWithStats(coloured.astype(np.uint8), connectivity=8)
    narrow = np.r_[False, stats[1:, cv2.CC_STAT_WIDTH] <= _MAX_MARK_WIDTH * width]
    coloured = narrow[labels] & coloured
    # one mark may be several coloured pieces (Vienna's red shield is cut in four by its white
    # cross): pieces closer than a tenth of the crop's height count as one mark
    k = max(3, int(round(_JOIN * height)) | 1)
    joined = cv2.dilate(coloured.astype(np.uint8), np.ones((k, k), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
    area = np.bincount(labels[coloured], minlength=n)  # coloured pixels of each joined mark
    keep = np.zeros(n, bool)
    for i in range(1, n):
        keep[i] = (stats[i, cv2.CC_STAT_WIDTH] - (k - 1) <= _MAX_MARK_WIDTH * width
                   and area[i] >= _MIN_MARK_AREA * height * width)
    if not keep.any() or keep.sum() > _MAX_MARKS:
        return None
    mask = cv2.dilate((keep[labels] & coloured).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    out = crop.copy()
    out[mask] = np.uint8(np.percentile(grey[~mask], 90))  # the light plate background
    return out, mask
