"""The corner refiner (a closer look at each detected plate's corners) on real frames, with the committed models."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.context_crop import context_crop, context_region
from edge.corner_refiner import CornerRefiner, plausible
from edge.detector import PlateDetector
from edge.factory import load_models
from edge.modelcontract import ModelContractError

from conftest import MODELS, box_iou, detect_val_frames

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from detector_train.augment import cover_quad, warp_plate  # noqa: E402
from platesynth import render_plate  # noqa: E402

REFINER = MODELS / "corner_refiner.onnx"


@pytest.fixture(scope="module")
def refiner() -> CornerRefiner:
    assert REFINER.is_file(), f"{REFINER} is missing: scripts/train_corner_refiner.py writes it"
    return CornerRefiner(REFINER, threads=1)


def test_metadata_describes_the_crop(refiner):
    assert refiner.contract.kind == "corner_refiner"
    assert refiner.version
    assert (refiner.height, refiner.width) == (48, 144)
    assert refiner.context_x >= 1.0 and refiner.context_y >= 1.0


def test_context_crop_region_maps_back_to_the_frame():
    img = np.zeros((100, 200, 3), np.uint8)
    img[40:60, 80:120] = 255
    crop, region = context_crop(img, (80, 40, 120, 60), 48, 144, 1.4, 2.0)
    assert crop.shape == (48, 144, 3)
    assert region == context_region((80, 40, 120, 60), 1.4, 2.0) == (72, 30, 128, 70)
    # the white box fills the crop's middle: x 80..120 of 72..128 and y 40..60 of 30..70
    u1, u2 = (80 - 72) / 56 * 144, (120 - 72) / 56 * 144
    assert crop[14:34, int(u1) + 2:int(u2) - 2].min() == 255 and crop[:10].max() == 0


def test_plausible_rejects_twisted_or_wandering_quads():
    box = (100, 50, 200, 80)
    good = np.array([[102, 52], [198, 50], [199, 79], [101, 80]], float)
    assert plausible(good, box)
    assert not plausible(good[[0, 2, 1, 3]], box)  # a bow-tie
    assert not plausible(good + (90, 0), box)  # moved off the box
    assert not plausible(np.full((4, 2), np.nan), box)


def _dutch_frames(shared_data: Path, count: int, seed: int = 5):
    """ro_dashcam val frames with every plate covered by a rendered Dutch plate on a known quad."""
    rng = np.random.default_rng(seed)
    out = []
    for path, boxes in detect_val_frames(shared_data, "ro_dashcam")[:count]:
        img = cv2.imread(str(path))
        quads = []
        for b in boxes:
            q = cover_quad(tuple(map(float, b)), rng, 0.15)
            img = warp_plate(img, np.ascontiguousarray(render_plate(rng, country="NL").image), q, rng)
            quads.append(q.astype(np.float64))
        out.append((img, quads))
    return out


def _corner_errors(det: PlateDetector, frames) -> list[float]:
    errs = []
    for img, quads in frames:
        dets = [d for d in det.detect(img) if d.score >= 0.4]
        for q in quads:
            gt_box = (*q.min(0), *q.max(0))
            best = max(dets, key=lambda d: box_iou(d.box, gt_box), default=None)
            if best is not None and box_iou(best.box, gt_box) >= 0.5:
                errs.append(float(np.linalg.norm(np.asarray(best.corners) - q, axis=1).mean() / (gt_box[2] - gt_box[0])))
    return errs


def test_refined_corners_are_closer_on_plates_with_exact_corners(refiner, shared_data):
    """Real val frames, plates covered by rendered Dutch plates whose corners are known exactly."""
    frames = _dutch_frames(shared_data, 40)
    plain = _corner_errors(PlateDetector(MODELS / "detector.onnx", threads=1), frames)
    refined = _corner_errors(PlateDetector(MODELS / "detector.onnx", threads=1, refiner=refiner), frames)
    assert len(plain) >= 30 and len(refined) >= len(plain) - 1
    assert np.mean(refined) <= 0.85 * np.mean(plain), (np.mean(plain), np.mean(refined))
    assert np.mean(refined) <= 0.03


def test_real_plates_are_still_found(refiner, shared_data):
    """On real val frames (labels are boxes) the refined boxes match as many labelled plates, as tightly."""
    plain = PlateDetector(MODELS / "detector.onnx", threads=1)
    refined = PlateDetector(MODELS / "detector.onnx", threads=1, refiner=refiner)
    found = {0: 0, 1: 0}
    fit = {0: [], 1: []}
    for name in ("ro_dashcam", "openalpr_us_br"):
        for path, boxes in detect_val_frames(shared_data, name, min_width=40)[:30]:
            img = cv2.imread(str(path))
            for k, det in enumerate((plain, refined)):
                dets = [d for d in det.detect(img) if d.score >= 0.4]
                for b in boxes:
                    best = max((box_iou(d.box, b) for d in dets), default=0.0)
                    found[k] += best >= 0.5
                    fit[k].append(best)
    assert found[1] >= found[0] - 1, found
    assert np.mean(fit[1]) >= np.mean(fit[0]) - 0.01, (np.mean(fit[0]), np.mean(fit[1]))


def test_factory_loads_it_by_default_and_can_leave_it_out():
    det, _ = load_models(MODELS)
    assert det.refiner is not None and det.refiner.contract.kind == "corner_refiner"
    det, _ = load_models(MODELS, corner_refiner="")
    assert det.refiner is None


def test_wrong_or_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ModelContractError, match="expected 'corner_refiner'"):
        CornerRefiner(MODELS / "plate_verifier.onnx")
    with pytest.raises((ModelContractError, FileNotFoundError), match="nope.onnx"):
        CornerRefiner(tmp_path / "nope.onnx")
