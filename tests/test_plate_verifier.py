"""The plate verifier (second look at doubtful detector boxes) on real frames, with the committed models."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.corner_refiner import CornerRefiner
from edge.detector import PlateDetector
from edge.factory import load_models
from edge.modelcontract import ModelContractError
from edge.plate_verifier import PlateVerifier, verifier_crop

from conftest import MODELS, box_iou, detect_val_frames

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from detector_train import mine_verifier_crops  # noqa: E402
from detector_train.sets import SETS, load_set  # noqa: E402

VERIFIER = MODELS / "plate_verifier.onnx"


@pytest.fixture(scope="module")
def verifier() -> PlateVerifier:
    assert VERIFIER.is_file(), f"{VERIFIER} is missing: scripts/train_verifier.py writes it"
    return PlateVerifier(VERIFIER, threads=1)


def _val_frames(shared_data: Path, name: str) -> list[tuple[Path, np.ndarray]]:
    return detect_val_frames(shared_data, name)


def test_metadata_describes_the_crop(verifier):
    assert verifier.contract.kind == "plate_verifier"
    assert verifier.version
    assert (verifier.height, verifier.width) == (32, 96)
    assert verifier.context_x >= 1.0 and verifier.context_y >= 1.0


def test_crop_keeps_shape_inside_and_outside_the_frame():
    img = np.zeros((100, 200, 3), np.uint8)
    img[40:60, 80:120] = 255  # a white "plate"
    inside = verifier_crop(img, (80, 40, 120, 60), 32, 96, 1.5, 2.0)
    assert inside.shape == (32, 96, 3) and inside.dtype == np.uint8
    # the box is the middle two thirds across and the middle half down: white there, black around
    assert inside[12:20, 20:76].min() == 255
    assert inside[:4].max() == 0 and inside[:, :6].max() == 0
    # a box hanging over the frame's corner repeats the edge pixels instead of failing
    corner = verifier_crop(img, (-30, -10, 20, 10), 32, 96, 1.5, 2.0)
    assert corner.shape == (32, 96, 3)
    # a box wholly outside the frame gives a grey crop
    outside = verifier_crop(img, (500, 500, 540, 520), 32, 96, 1.5, 2.0)
    assert outside.shape == (32, 96, 3) and np.all(outside == 114)


def test_real_plates_score_high_and_empty_road_low(verifier, shared_data):
    """Labelled val plates of two real sets against boxes of the same size moved to where no plate is."""
    plates, empty = [], []
    for name in ("ro_dashcam", "openalpr_us_br"):
        for path, boxes in _val_frames(shared_data, name)[:25]:
            img = cv2.imread(str(path))
            H, W = img.shape[:2]
            wide = [b for b in boxes if b[2] - b[0] >= 40]
            plates.extend(verifier.probabilities(img, wide))
            # the same box shifted to the top strip of the frame (sky, buildings, road far away)
            moved = [(b[0], 0.02 * H, b[2], 0.02 * H + (b[3] - b[1])) for b in wide
                     if not any(o[1] < 0.02 * H + (b[3] - b[1]) * 3 for o in boxes)]
            empty.extend(verifier.probabilities(img, moved))
    plates, empty = np.asarray(plates), np.asarray(empty)
    assert len(plates) >= 30 and len(empty) >= 10
    assert np.mean(plates >= 0.5) >= 0.9, f"plates kept: {np.sort(plates)[:10]}"
    assert np.mean(empty < 0.5) >= 0.9, f"empty boxes rejected: {np.sort(empty)[-10:]}"


def test_detector_rescores_only_doubtful_boxes(verifier, shared_data):
    """score = sqrt(detector score x P(plate)) under verify_below; sure boxes keep the detector's score."""
    plain = PlateDetector(MODELS / "detector.onnx", threads=1, score_threshold=0.2)
    checked = PlateDetector(MODELS / "detector.onnx", threads=1, score_threshold=0.2, verifier=verifier,
                            verify_below=0.7)
    seen_doubtful = seen_sure = 0
    for path, _ in _val_frames(shared_data, "uc3m")[:40]:
        img = cv2.imread(str(path))
        before = plain.detect(img)
        after = {d.box: d.score for d in checked.detect(img)}
        assert len(after) == len(before)
        for d in before:
            if d.score < 0.7:
                p = float(verifier.probabilities(img, [d.box])[0])
                assert after[d.box] == pytest.approx(np.sqrt(d.score * p), abs=1e-5)
                seen_doubtful += 1
            else:
                assert after[d.box] == pytest.approx(d.score)
                seen_sure += 1
    assert seen_doubtful >= 10 and seen_sure >= 10


def test_refine_first_has_the_verifier_score_the_refined_boxes(verifier, shared_data):
    """refine_first: the corner refiner places each box first and the verifier re-scores the refined box
    (default: the detector's own box is scored, then refined)."""
    refiner = CornerRefiner(MODELS / "corner_refiner.onnx", threads=1)
    refined_only = PlateDetector(MODELS / "detector.onnx", threads=1, score_threshold=0.2, refiner=refiner)
    first = PlateDetector(MODELS / "detector.onnx", threads=1, score_threshold=0.2, verifier=verifier,
                          refiner=refiner, refine_first=True)
    after = PlateDetector(MODELS / "detector.onnx", threads=1, score_threshold=0.2, verifier=verifier,
                          refiner=refiner)
    seen = differ = 0
    for path, _ in _val_frames(shared_data, "uc3m")[:30]:
        img = cv2.imread(str(path))
        got = {d.box: d.score for d in first.detect(img)}
        old = {d.box: d.score for d in after.detect(img)}
        assert set(got) == set(old)  # the same refined boxes either way; only their scores may differ
        for d in refined_only.detect(img):
            if d.score < 0.7:
                p = float(verifier.probabilities(img, [d.box])[0])
                assert got[d.box] == pytest.approx(np.sqrt(d.score * p), abs=1e-5)
                seen += 1
                differ += abs(got[d.box] - old[d.box]) > 1e-4
    assert seen >= 10 and differ >= 1


def test_verifier_removes_false_boxes_and_keeps_plates(verifier, shared_data):
    """On uc3m val frames at the unit's score 0.4: fewer boxes off every labelled plate, the same plates found."""
    plain = PlateDetector(MODELS / "detector.onnx", threads=1)
    checked = PlateDetector(MODELS / "detector.onnx", threads=1, verifier=verifier)

    def tally(det):
        found = false = 0
        for path, boxes in _val_frames(shared_data, "uc3m")[:120]:
            dets = [d for d in det.detect(cv2.imread(str(path))) if d.score >= 0.4]
            hit = [any(box_iou(d.box, b) >= 0.5 for b in boxes) for d in dets]
            found += sum(any(box_iou(d.box, b) >= 0.5 for d in dets) for b in boxes)
            false += sum(1 for h, d in zip(hit, dets) if not h and not any(box_iou(d.box, b) > 0 for b in boxes))
        return found, false

    found0, false0 = tally(plain)
    found1, false1 = tally(checked)
    assert found1 >= found0 - 1
    assert false1 <= false0 * 0.6, (false0, false1)


def test_factory_loads_it_by_default_and_can_leave_it_out():
    det, _ = load_models(MODELS)
    assert det.verifier is not None and det.verifier.contract.kind == "plate_verifier"
    det, _ = load_models(MODELS, verifier="")
    assert det.verifier is None


def test_wrong_or_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ModelContractError, match="expected 'plate_verifier'"):
        PlateVerifier(MODELS / "detector.onnx")
    with pytest.raises((ModelContractError, FileNotFoundError), match="nope.onnx"):
        PlateVerifier(tmp_path / "nope.onnx")
    with pytest.raises(ValueError, match="verify_below"):
        PlateDetector(MODELS / "detector.onnx", verify_below=1.5)


def test_mining_with_turned_frames_labels_the_turned_plates(shared_data, tmp_path):
    """mine_verifier_crops --rolled: real train frames also turned (a rolled camera), each detection there
    labelled against the turned plates, so a verifier can learn turned plates and their scenes' false boxes."""
    out = tmp_path / "crops.npz"
    assert mine_verifier_crops.main(["--data", str(shared_data / "detect"), "--limit", "4", "--no-synth", "--rolled", "1",
                                     "--roll-max", "12", "--seed", "3", "--out", str(out)]) == 0
    d = np.load(out)
    turned = d["variant"] == 4
    assert turned.any() and (d["variant"] == 0).any()
    # plates are found and labelled as plates in the turned frames as in the upright ones
    assert (d["label"][turned] == 1).sum() >= 0.5 * (d["label"][d["variant"] == 0] == 1).sum() > 0
    assert d["crops"].shape[0] == len(d["label"])


def test_mining_from_refined_boxes_cuts_the_refiners_boxes(shared_data, tmp_path):
    """mine_verifier_crops --refiner: each crop is cut around the box the corner refiner's corners span
    (what PlateDetector(refine_first=True) shows the verifier), so the recorded widths are those boxes'."""
    args = ["--data", str(shared_data / "detect"), "--limit", "3", "--no-synth", "--seed", "3"]
    plain, refined = tmp_path / "plain.npz", tmp_path / "refined.npz"
    assert mine_verifier_crops.main([*args, "--out", str(plain)]) == 0
    assert mine_verifier_crops.main([*args, "--refiner", str(MODELS / "corner_refiner.onnx"), "--out", str(refined)]) == 0
    p, r = np.load(plain), np.load(refined)
    assert (r["label"] == 1).sum() > 0 and len(r["label"]) == r["crops"].shape[0]
    # the detector's own boxes, refined: the same detections, other widths
    refiner = CornerRefiner(MODELS / "corner_refiner.onnx", threads=1)
    det = PlateDetector(MODELS / "detector.onnx", threads=1, score_threshold=0.15, refiner=refiner)
    frames = [s for s in load_set("uc3m", shared_data / "detect") if s.split == "train"][:3]
    widths = [d.box[2] - d.box[0] for s in frames for d in det.detect(cv2.imread(str(s.image)))]
    uc3m = r["width"][r["set"] == SETS.index("uc3m")]
    assert len(uc3m) > 0 and all(np.isclose(widths, w, atol=1e-3).any() for w in uc3m), "a crop not of a refined box"
    assert not np.array_equal(np.sort(p["width"]), np.sort(r["width"]))
