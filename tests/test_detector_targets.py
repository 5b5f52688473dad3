"""The detector's training targets: what training encodes is what the unit decodes, and with
--reg-per-plate a far plate counts as much in the corner loss as a close-up."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from detector_train.encoding import N_REG, STRIDE, make_targets  # noqa: E402

from edge.detector import PlateDetector  # noqa: E402

MODELS = Path(__file__).resolve().parents[1] / "models"
NO_IGNORE = np.zeros((0, 4), np.float32)
CLOSE_UP = [[20, 30], [232, 40], [230, 92], [18, 82]]  # 212 px wide, a little skewed
FAR = [[250, 200], [296, 201], [296, 212], [250, 211]]  # 46 px wide


def quads(*qs) -> np.ndarray:
    return np.array(qs, np.float32).reshape(-1, 4, 2)


def test_peak_cells_decode_to_the_plate_corners_the_way_the_unit_decodes_them():
    """The runtime decoder (edge/detector.py) must read back the corners the targets encode."""
    truth = quads(CLOSE_UP, FAR)
    heat, _, reg, _ = make_targets(truth, NO_IGNORE, (320, 320))
    assert reg.shape == (N_REG, 320 // STRIDE, 320 // STRIDE)
    det = PlateDetector(MODELS / "detector.onnx", score_threshold=0.99)
    assert det.stride == STRIDE
    found = det._decode(heat[0], reg)
    assert len(found) == 2
    got = sorted((q for _, q in found), key=lambda q: q[0, 0])
    for want, q in zip(truth, got):
        assert np.abs(q - want).max() < 1e-3


def test_default_weights_follow_the_cells_so_a_close_up_outweighs_a_far_plate():
    _, _, _, rw = make_targets(quads(CLOSE_UP, FAR), NO_IGNORE, (320, 320))
    near, far = rw[0, :40].sum(), rw[0, 40:].sum()
    assert rw.max() == pytest.approx(1.0)  # a cell's weight is its heat
    assert near > 10 * far  # why --reg-per-plate exists: far plates barely shape the corner head


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_per_plate_weights_add_up_to_one_per_plate(order):
    qs = quads(CLOSE_UP, FAR)[list(order)]
    _, _, reg_default, rw = make_targets(qs, NO_IGNORE, (320, 320), per_plate=True)
    assert rw[0, :40].sum() == pytest.approx(1.0, abs=1e-5)
    assert rw[0, 40:].sum() == pytest.approx(1.0, abs=1e-5)
    _, _, reg_per_plate, _ = make_targets(qs, NO_IGNORE, (320, 320))
    np.testing.assert_array_equal(reg_default, reg_per_plate)  # only the weights change


def test_per_plate_weights_of_overlapping_plates_each_add_up_to_one():
    """Where two plates' centre regions overlap, each cell trains the plate it is nearer the centre of."""
    a = [[100, 100], [180, 100], [180, 120], [100, 120]]
    b = [[140, 104], [240, 104], [240, 128], [140, 128]]
    _, _, reg, rw = make_targets(quads(a, b), NO_IGNORE, (320, 320), per_plate=True)
    cells = rw[0] > 0
    owned_by_b = np.isclose(reg[2], np.log(100 / STRIDE)) & cells  # b's box is 100 px wide, a's 80
    assert 0 < owned_by_b.sum() < cells.sum()
    assert rw[0][owned_by_b].sum() == pytest.approx(1.0, abs=1e-5)
    assert rw[0][cells & ~owned_by_b].sum() == pytest.approx(1.0, abs=1e-5)


def test_no_plate_gives_no_regression_weight():
    heat, hw, _, rw = make_targets(quads(), NO_IGNORE, (320, 320), per_plate=True)
    assert rw.sum() == 0 and heat.sum() == 0 and hw.min() == 1.0
