"""Plate detector serving on real frames from the shared sets, with the committed ONNX model."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.detector import PlateDetector
from edge.modelcontract import ModelContractError
from edge.types import Detection

from conftest import MODELS, box_iou, detect_val_frames

MODEL = MODELS / "detector.onnx"


@pytest.fixture(scope="module")
def detector() -> PlateDetector:
    assert MODEL.is_file(), f"{MODEL} is missing: scripts/train_detector.py --export-only writes it"
    return PlateDetector(MODEL, threads=1)


def _val_frames(shared_data: Path, name: str, min_width: float) -> list[tuple[Path, np.ndarray]]:
    return detect_val_frames(shared_data, name, min_width)


_iou = box_iou


def _found(dets: list[Detection], box, min_iou=0.5) -> Detection | None:
    best = max(dets, key=lambda d: _iou(d.box, box), default=None)
    return best if best is not None and _iou(best.box, box) >= min_iou else None


def test_metadata_describes_the_model(detector):
    assert detector.contract.kind == "plate_detector"
    assert detector.long_side <= 416
    assert detector.version


def test_finds_real_dashcam_plates_in_original_pixels(detector, shared_data):
    frames = _val_frames(shared_data, "ro_dashcam", min_width=50)[:30]
    assert len(frames) >= 20
    hits = total = 0
    errs = []
    for path, boxes in frames:
        img = cv2.imread(str(path))
        dets = detector.detect(img)
        for b in boxes:
            total += 1
            d = _found(dets, b)
            if d is not None:
                hits += 1
                truth = [[b[0], b[1]], [b[2], b[1]], [b[2], b[3]], [b[0], b[3]]]
                errs.append(np.linalg.norm(np.asarray(d.corners) - truth, axis=1).mean() / (b[2] - b[0]))
                x1, y1, x2, y2 = d.box
                assert 0 <= x1 < x2 <= img.shape[1] and 0 <= y1 < y2 <= img.shape[0]
    assert hits / total >= 0.9, f"found {hits} of {total} real plates"
    assert np.mean(errs) < 0.1, f"mean corner error {np.mean(errs):.3f} of plate width"


def test_finds_plates_in_other_sets(detector, shared_data):
    frames = _val_frames(shared_data, "uc3m", min_width=40)[:20] + _val_frames(shared_data, "openalpr_us_br", 40)[:20]
    hits = sum(_found(detector.detect(cv2.imread(str(p))), b[0]) is not None for p, b in frames)
    assert hits / len(frames) >= 0.85, f"found {hits} of {len(frames)}"


def test_output_scales_with_frame_size(detector, shared_data):
    path, boxes = _val_frames(shared_data, "ro_dashcam", min_width=70)[0]
    img = cv2.imread(str(path))
    small = detector.detect(img)
    big_img = cv2.resize(img, None, fx=2.0, fy=2.0, interpolation=cv2.INTER_LINEAR)
    big = detector.detect(big_img)
    d1, d2 = _found(small, boxes[0]), _found(big, boxes[0] * 2)
    assert d1 is not None and d2 is not None
    assert np.allclose(np.asarray(d2.box) / 2, d1.box, atol=0.05 * (boxes[0][2] - boxes[0][0]))
    for d in big:
        x1, y1, x2, y2 = d.box
        assert 0 <= x1 < x2 <= big_img.shape[1] and 0 <= y1 < y2 <= big_img.shape[0]
        assert 0.0 <= d.score <= 1.0


def test_odd_frame_shapes_run(detector, shared_data):
    path, _ = _val_frames(shared_data, "ro_dashcam", min_width=50)[0]
    img = cv2.imread(str(path))
    for shape in ((37, 1000), (777, 333), (8, 8), (1080, 1920)):
        frame = cv2.resize(img, (shape[1], shape[0]))
        for d in detector.detect(frame):
            assert d.box[2] <= shape[1] and d.box[3] <= shape[0]


def test_roi_limits_the_search_and_keeps_original_coordinates(detector, shared_data):
    path, boxes = _val_frames(shared_data, "ro_dashcam", min_width=70)[0]
    img = cv2.imread(str(path))
    b = boxes[0]
    full = _found(detector.detect(img), b)
    assert full is not None
    m = 60
    inside = [(b[0] - m, b[1] - m), (b[2] + m, b[1] - m), (b[2] + m, b[3] + m), (b[0] - m, b[3] + m)]
    d = _found(detector.detect(img, roi=inside), b)
    assert d is not None, "plate inside the region of interest not found"
    # The ROI is searched at a finer scale than the whole frame, so the two detections differ by
    # up to about twice the detector's own corner error (~0.07 plate widths, models/detector.md).
    assert np.abs(np.asarray(d.corners) - np.asarray(full.corners)).max() < 0.15 * (b[2] - b[0])
    h, w = img.shape[:2]
    cx = (b[0] + b[2]) / 2
    away = [(0, 0), (cx - 100, 0), (cx - 100, h), (0, h)] if cx > 200 else [(cx + 100, 0), (w, 0), (w, h), (cx + 100, h)]
    assert _found(detector.detect(img, roi=away), b, 0.1) is None, "plate outside the region of interest reported"


def test_model_input_is_the_contracts_normalisation_of_the_letterboxed_frame(detector, shared_data):
    """letterbox() scales channels itself (fast path); it must equal the plain formula from the
    model's metadata: RGB order, (pixel - mean) / std, padded with pad_value to a multiple."""
    frame = cv2.imread(str(_val_frames(shared_data, "ro_dashcam", 0)[0][0]))
    for w, h in ((640, 480), (333, 251)):
        img = cv2.resize(frame, (w, h))
        x, k = detector.letterbox(img)
        nw, nh = round(w * k), round(h * k)
        m = detector.multiple
        assert x.shape == (1, 3, -(-nh // m) * m, -(-nw // m) * m) and x.dtype == np.float32
        small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if k < 0.5 else cv2.INTER_LINEAR)
        canvas = np.full((x.shape[2], x.shape[3], 3), detector.pad_value, np.uint8)
        canvas[:nh, :nw] = small
        c = detector.contract
        rgb = (canvas[:, :, ::-1] if detector.rgb else canvas).astype(np.float64) / 255.0
        want = ((rgb - np.asarray(c.mean)) / np.asarray(c.std)).transpose(2, 0, 1)[None]
        assert np.abs(x - want).max() < 1e-4


def test_plain_frames_give_no_plates(detector):
    gray = np.full((480, 640, 3), 120, np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    assert detector.detect(gray) == []
    assert detector.detect(noise) == []


def test_bad_input_is_named(detector):
    with pytest.raises(ValueError, match="H x W x 3"):
        detector.detect(np.zeros((100, 100), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        detector.detect(np.zeros((100, 100, 3), np.float32))
    with pytest.raises(TypeError, match="numpy"):
        detector.detect("frame.jpg")
    with pytest.raises(ValueError, match="at least 3"):
        detector.detect(np.zeros((100, 100, 3), np.uint8), roi=[(0, 0), (10, 10)])


def test_missing_or_wrong_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelContractError, match="not found"):
        PlateDetector(tmp_path / "nope.onnx")


def test_int8_copy_finds_the_same_plates_as_the_float_model(detector, shared_data):
    """models/detector-int8.onnx (scripts/quantize_detector.py, calibrated on training frames only) is a
    drop-in choice for models.detector: on real validation frames it finds the float model's plates."""
    int8 = PlateDetector(MODELS / "detector-int8.onnx", threads=1)
    assert int8.version == detector.version + "-int8"
    assert (int8.long_side, int8.stride) == (detector.long_side, detector.stride)
    frames = _val_frames(shared_data, "ro_dashcam", min_width=50)[:30]
    truth = same = 0
    for path, boxes in frames:
        img = cv2.imread(str(path))
        ref = [d for d in detector.detect(img) if d.score >= 0.4]
        got = [d for d in int8.detect(img) if d.score >= 0.4]
        for box in boxes:
            r = _found(ref, box)
            if r is None:
                continue
            truth += 1
            g = _found(got, box)
            same += g is not None and _iou(g.box, r.box) >= 0.8
    assert truth >= 20 and same >= 0.95 * truth, f"{same} of {truth} plates found alike"
