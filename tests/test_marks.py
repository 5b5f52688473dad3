"""Coloured marks (arms, stickers) are painted out of light plates only; other crops are left alone."""

from __future__ import annotations

import cv2
import numpy as np

from edge.marks import paint_out_marks


def _plate(background=(255, 255, 255)) -> np.ndarray:
    img = np.full((110, 520, 3), background, np.uint8)
    cv2.putText(img, "W 8646 A", (20, 85), cv2.FONT_HERSHEY_SIMPLEX, 2.6, (20, 20, 20), 9)
    return img


def test_a_red_shield_on_a_white_plate_is_painted_out_and_text_stays():
    img = _plate()
    cv2.rectangle(img, (120, 20), (160, 90), (40, 30, 210), -1)  # a red shield (BGR)
    cv2.rectangle(img, (120, 48), (160, 62), (255, 255, 255), -1)  # its white bar
    marks = paint_out_marks(img)
    assert marks is not None
    out, painted = marks
    assert painted[22:46, 122:158].all() and painted[64:88, 122:158].all()  # the red of the shield
    assert not painted[:, 200:].any()  # and nothing of the characters
    grey = cv2.cvtColor(out, cv2.COLOR_BGR2GRAY)
    assert grey[25:85, 122:158].min() > 200  # the shield is gone
    ink = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) < 100
    ink[:, :170] = False  # the characters right of the shield
    assert ink.sum() > 1000 and (grey[ink] < 100).all()  # stay as they were


def test_nothing_to_paint_on_grey_yellow_or_plain_plates():
    assert paint_out_marks(_plate()) is None  # no coloured mark
    assert paint_out_marks(cv2.cvtColor(_plate(), cv2.COLOR_BGR2GRAY)) is None  # infrared-like grey crop
    yellow = _plate((0, 200, 250))
    cv2.rectangle(yellow, (0, 0), (40, 110), (160, 60, 0), -1)  # blue NL strip on a yellow plate
    assert paint_out_marks(yellow) is None  # the plate itself is coloured: shading would look like marks
    red_text = np.full((110, 520, 3), 255, np.uint8)
    for i, x in enumerate(range(20, 500, 70)):  # seven red characters (Belgian plates) are not marks
        cv2.putText(red_text, "ABC1234"[i], (x, 85), cv2.FONT_HERSHEY_SIMPLEX, 2.6, (40, 20, 170), 9)
    assert paint_out_marks(red_text) is None
