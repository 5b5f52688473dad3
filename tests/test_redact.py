"""Evidence frames: only the hit's own plate stays; other plates and everything outside the ROI are covered."""

from __future__ import annotations

import numpy as np

from edge.redact import evidence_frame
from edge.types import Detection


def _det(x1, y1, x2, y2, score=0.9) -> Detection:
    return Detection(box=(x1, y1, x2, y2), corners=((x1, y1), (x2, y1), (x2, y2), (x1, y2)), score=score)


def test_other_plates_are_covered_and_the_hit_plate_is_untouched():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    hit, loose_twin, other = _det(20, 100, 120, 125), _det(16, 97, 124, 128), _det(200, 60, 280, 80, score=0.31)
    before = image.copy()
    out = evidence_frame(image, hit, [hit, loose_twin, other])
    assert np.array_equal(image, before)  # the camera frame itself is not changed
    assert np.array_equal(out[97:129, 16:125], image[97:129, 16:125])  # a second box of the same plate stays
    covered = out[55:86, 190:291]  # the other plate plus a margin
    assert (covered == covered[0, 0]).all() and not np.array_equal(covered, image[55:86, 190:291])
    assert np.array_equal(out[150:, :], image[150:, :])  # nothing else is touched without a ROI


def test_outside_the_roi_is_covered():
    image = np.full((240, 320, 3), 200, np.uint8)
    hit = _det(180, 100, 280, 125)
    out = evidence_frame(image, hit, [hit], roi=[(160, 0), (320, 0), (320, 240), (160, 240)])
    assert (out[:, :150] != 200).all() and (out[:, 170:] == 200).all()
