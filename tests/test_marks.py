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


def test_a_shield_cut_by_its_cross_next_to_red_borders_is_one_mark():
    """Vienna's arms on a small two-row crop: a red shield cut in four by a white cross, right under
    the Austrian plate's red top border. The pieces are one mark; the borders are not marks."""
    img = np.full((50, 70, 3), 255, np.uint8)
    img[:3] = img[-3:] = (40, 30, 210)  # red top and bottom borders, the crop's full width
    cv2.rectangle(img, (29, 6), (38, 19), (40, 30, 210), -1)  # the shield, 10 x 14 px
    img[6:20, 33:35] = 255  # the white cross cuts it in four pieces, each too small to be a mark alone
    img[12:14, 29:39] = 255
    cv2.putText(img, "W", (4, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (20, 20, 20), 2)
    cv2.putText(img, "518B", (4, 44), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (20, 20, 20), 2)
    marks = paint_out_marks(img)
    assert marks is not None
    out, painted = marks
    assert painted[6:12, 29:33].all() and painted[14:20, 35:39].all()  # every piece of the shield
    assert not painted[:3, :25].any() and not painted[-3:].any()  # the borders stay
    grey = cv2.cvtColor(out, cv2.COLOR_BGR2GRAY)
    assert grey[6:20, 29:39].min() > 200


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
