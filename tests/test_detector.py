"""Plate detector serving on real frames from the shared sets, with the committed ONNX model."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.detector import PlateDetector, shrink
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
    for shape in ((37, 1000), (777, 333), (8, 8), (1080, 1920), (2160, 3840)):
        frame = cv2.resize(img, (shape[1], shape[0]))
        for roll in (0.0, -7.5, 45.0):
            for d in detector.detect(frame, roll=roll):
                assert 0 <= d.box[0] < d.box[2] <= shape[1] and 0 <= d.box[1] < d.box[3] <= shape[0]


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


def _turned(img: np.ndarray, boxes, degrees: float):
    """The frame as a camera rolled `degrees` clockwise sees it (same size), and each labelled box's
    corners turned with it."""
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), -degrees, 1.0)  # cv2 turns anticlockwise for positive angles
    quads = [np.array([[b[0], b[1]], [b[2], b[1]], [b[2], b[3]], [b[0], b[3]]]) @ m[:, :2].T + m[:, 2] for b in boxes]
    return cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REPLICATE), quads


def test_a_rolled_camera_told_its_roll_finds_its_plates_and_their_turned_corners(detector, shared_data):
    """camera.roll_degrees: a frame whose scene leans 12 degrees is searched turned level, and the
    corners come back in the rolled frame's pixels, turned with the plate (so the recognizer's crop is level)."""
    frames = _val_frames(shared_data, "ro_dashcam", min_width=50)[:40]
    found = {"plain": 0, "told": 0}
    errs: dict[str, list] = {"plain": [], "told": []}
    total = 0
    for i, (path, boxes) in enumerate(frames):
        degrees = 12.0 if i % 2 == 0 else -12.0
        img, quads = _turned(cv2.imread(str(path)), boxes, degrees)
        dets = {"plain": detector.detect(img), "told": detector.detect(img, roll=degrees)}
        for q in quads:
            qbox = (*q.min(0), *q.max(0))
            if not (0 <= qbox[0] and qbox[2] <= img.shape[1] and 0 <= qbox[1] and qbox[3] <= img.shape[0]):
                continue  # turned partly out of the frame
            total += 1
            for name, ds in dets.items():
                d = _found([d for d in ds if d.score >= 0.4], qbox)
                if d is not None:
                    found[name] += 1
                    errs[name].append(np.linalg.norm(np.asarray(d.corners) - q, axis=1).mean()
                                      / np.linalg.norm(q[1] - q[0]))
    assert total >= 30
    assert found["told"] >= 0.9 * total and found["told"] >= found["plain"], (found, total)
    told, plain = np.median(errs["told"]), np.median(errs["plain"])
    # told its roll the detector sees upright plates, as it was trained: its corners turn all the way
    # with the plate (searching the rolled frame as it is, the corners turn only part of the way)
    assert told < 0.08 and told < 0.8 * plain, (told, plain)


def test_roll_and_roi_together_keep_frame_pixels(detector, shared_data):
    """A region of interest on a rolled camera: the region's crop is turned level, and the plate inside
    comes back in the full frame's pixels, where the same roll finds it without the region."""
    path, boxes = _val_frames(shared_data, "ro_dashcam", min_width=70)[0]
    img, quads = _turned(cv2.imread(str(path)), boxes, 10.0)
    q = quads[0]
    qbox = (*q.min(0), *q.max(0))
    m = 80
    region = [(qbox[0] - m, qbox[1] - m), (qbox[2] + m, qbox[1] - m), (qbox[2] + m, qbox[3] + m), (qbox[0] - m, qbox[3] + m)]
    full = _found(detector.detect(img, roll=10.0), qbox)
    inside = _found(detector.detect(img, roi=region, roll=10.0), qbox)
    assert full is not None and inside is not None
    assert np.abs(np.asarray(inside.corners) - np.asarray(full.corners)).max() < 0.15 * (qbox[2] - qbox[0])


def test_a_tight_roi_on_a_rolled_camera_is_searched_to_its_corners(detector, shared_data):
    """With a region of interest the levelled window is the region turned level, so a plate sitting in
    a corner of a tight rectangular ROI is still searched (turning the ROI's bounding rectangle within
    its own size would turn its corners out of view: 17 of these 20 found that way)."""
    frames = _val_frames(shared_data, "ro_dashcam", min_width=60)[:20]
    found = 0
    for i, (path, boxes) in enumerate(frames):
        img, quads = _turned(cv2.imread(str(path)), boxes, 12.0)
        q = quads[0]
        qb = (*q.min(0), *q.max(0))
        rw, rh = 2.2 * (qb[2] - qb[0]), 3.5 * (qb[3] - qb[1])  # the plate in corner i % 4 of the ROI
        x0 = qb[0] - 2 if i % 4 in (0, 3) else qb[2] + 2 - rw
        y0 = qb[1] - 2 if i % 4 in (0, 1) else qb[3] + 2 - rh
        roi = [(x0, y0), (x0 + rw, y0), (x0 + rw, y0 + rh), (x0, y0 + rh)]
        found += _found([d for d in detector.detect(img, roi=roi, roll=12.0) if d.score >= 0.4], qb) is not None
    assert found >= 18, f"{found} of {len(frames)} plates in the corners of a tight ROI found"


def test_levelled_input_maps_back_to_frame_pixels(detector, shared_data):
    """The levelled input at a negligible roll is the letterboxed frame, and its back map is the
    letterbox's scale; at 12 degrees a frame point goes to the input and comes back to itself."""
    img = cv2.imread(str(_val_frames(shared_data, "ro_dashcam", 0)[0][0]))
    x, k = detector.letterbox(img)
    xl, back = detector.levelled_input(img, 1e-9)
    assert xl.shape == x.shape and np.abs(xl - x).max() < 0.05
    assert np.allclose(back, [[1 / k, 0, 0], [0, 1 / k, 0]], atol=1e-6)
    xl, back = detector.levelled_input(img, 12.0)
    h, w = img.shape[:2]
    assert xl.shape == x.shape, "the turned frame keeps the scale and size of the level one"
    # the frame's centre stays the centre of the input's picture area
    centre = back[:, :2] @ np.array([w * k / 2, h * k / 2]) + back[:, 2]
    assert np.allclose(centre, [w / 2, h / 2], atol=1.0)
    # a point right of the centre of a scene leaning clockwise sits lower in the frame: level again, it
    # is level with the centre
    a = np.deg2rad(12.0)
    right = np.array([w / 2 + 100 * np.cos(a), h / 2 + 100 * np.sin(a)])
    inp = np.linalg.solve(back[:, :2], right - back[:, 2])
    assert abs(inp[1] - h * k / 2) < 0.5 and inp[0] > w * k / 2


def test_bad_roll_is_named(detector):
    img = np.full((120, 160, 3), 120, np.uint8)
    for bad in (90, float("nan"), "level"):
        with pytest.raises(ValueError, match="roll"):
            detector.detect(img, roll=bad)


def test_model_input_is_the_contracts_normalisation_of_the_letterboxed_frame(detector, shared_data):
    """letterbox() scales channels itself (fast path); it must equal the plain formula from the
    model's metadata: RGB order, (pixel - mean) / std, padded with pad_value to a multiple."""
    frame = cv2.imread(str(_val_frames(shared_data, "ro_dashcam", 0)[0][0]))
    for w, h in ((640, 480), (333, 251), (1280, 720), (1920, 1080)):
        img = cv2.resize(frame, (w, h), interpolation=cv2.INTER_CUBIC)
        x, k = detector.letterbox(img)
        nw, nh = round(w * k), round(h * k)
        m = detector.multiple
        assert x.shape == (1, 3, -(-nh // m) * m, -(-nw // m) * m) and x.dtype == np.float32
        small = shrink(img, nw, nh)
        if k >= 0.5:
            assert np.array_equal(small, cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR))
        else:  # area averaging, as the training frames were; HD frames halved first, to within a grey level
            area = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
            assert np.abs(small.astype(np.float64) - area).mean() < 1.0
            if k > 0.25:
                assert np.array_equal(small, area)
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


class _CountingSession:
    """Delegates to an onnxruntime session and counts the model runs."""

    def __init__(self, session):
        self.session, self.runs = session, 0

    def run(self, *args, **kwargs):
        self.runs += 1
        return self.session.run(*args, **kwargs)


def test_close_up_search_finds_plates_too_large_for_the_normal_search(detector, shared_data):
    """Real val frames whose plate fills much of the frame (a 460 px Brazilian plate in a 587 px photo,
    a 295 px US plate in 900 px, a 110 px Spanish plate in 320 px) are missed by the normal search and
    found by the smaller close-up search that runs when nothing scored >= close_up_below was found."""
    import csv

    wanted = {("openalpr_us_br", "br_PVX0095.jpg"), ("openalpr_us_br", "us_car19.jpg"), ("uc3m", "01121.jpg")}
    frames = []
    for name in ("openalpr_us_br", "uc3m"):
        with open(shared_data / "detect" / name / "labels.csv", newline="") as f:
            for r in csv.DictReader(f):
                if (name, r["image"].split("/")[-1]) in wanted:
                    box = [float(r[k]) for k in ("xmin", "ymin", "xmax", "ymax")]
                    frames.append((cv2.imread(str(shared_data / "detect" / name / r["image"])), box))
    assert len(frames) == 3
    normal_only = PlateDetector(MODEL, threads=1, close_up_scale=0.0)
    for img, box in frames:
        assert _found(normal_only.detect(img), box) is None
        d = _found(detector.detect(img), box, min_iou=0.7)
        assert d is not None and d.box[2] - d.box[0] >= 0.2 * max(img.shape[:2])
    # the close-up search goes the normal search's way through a region of interest and a rolled camera
    img, box = max(frames, key=lambda f: f[1][2] - f[1][0])  # the Brazilian plate, 460 of 587 px
    x1, y1, x2, y2 = box
    lane = [(x1 - 30, y1 - 30), (x2 + 30, y1 - 30), (x2 + 30, y2 + 30), (x1 - 30, y2 + 30)]
    for kwargs in ({"roi": lane}, {"roll": 4.0}):
        assert _found(normal_only.detect(img, **kwargs), box) is None
        assert _found(detector.detect(img, **kwargs), box, min_iou=0.7) is not None, kwargs


def test_close_up_search_runs_only_where_no_plate_was_found(shared_data):
    det = PlateDetector(MODEL, threads=1)
    det.session = counting = _CountingSession(det.session)
    path, boxes = _val_frames(shared_data, "ro_dashcam", min_width=50)[0]
    assert any(d.score >= det.close_up_below for d in det.detect(cv2.imread(str(path))))
    assert counting.runs == 1
    assert det.detect(np.full((480, 640, 3), 120, np.uint8)) == []
    assert counting.runs == 3  # the normal search and the close-up search
    with pytest.raises(ValueError, match="close_up_scale"):
        PlateDetector(MODEL, close_up_scale=1.0)
