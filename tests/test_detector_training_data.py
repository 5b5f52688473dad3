"""Training-side don't-care regions of the detector: plates the real sets' labels lack must not be
trained as background, must follow the frame's augmentation, and must never touch a val frame (and the
evaluation's list of such plates only val frames); hard frames (mine_hard_frames.py) are drawn more often."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from detector_train.augment import affine_crop, hflip  # noqa: E402
from detector_train.sets import (CACHE_LONG_SIDE, SETS, TRAIN_IGNORE, Cached, draw_probabilities,  # noqa: E402
                                 load_hard_frames, load_set, load_train_ignore)


@pytest.fixture(scope="module")
def frames(shared_data):
    """The detection sets as cache entries without pixels (the loader needs names and splits only)."""
    root = shared_data / "detect"
    return root, [Cached(s.set, s.image.name, s.split, b"", s.boxes) for name in SETS for s in load_set(name, root)]


def test_shipped_list_covers_train_frames_only_and_boxes_lie_inside_them(frames):
    root, cache = frames
    regions = load_train_ignore(TRAIN_IGNORE, cache, root)
    assert len(regions) > 100  # ro_dashcam alone leaves over a hundred plates of other cars unboxed
    split = {(c.set, c.name): c.split for c in cache}
    for (name, image), boxes in regions.items():
        assert split[(name, image)] == "train"
        with Image.open(root / name / "images" / image) as im:
            k = CACHE_LONG_SIDE / max(im.size)
            w, h = im.size[0] * k, im.size[1] * k
        assert boxes.shape[1] == 4
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert (boxes[:, :2] >= -1).all() and (boxes[:, 2] <= w + 1).all() and (boxes[:, 3] <= h + 1).all()


def test_evaluation_ignore_list_covers_val_frames_only_and_boxes_lie_inside_them(frames):
    """The evaluation's don't-care list (plates the val labels lack) is the mirror image: val frames only,
    so no region of it can hide a training frame's plate, and every box inside its stored image."""
    root, cache = frames
    from eval_detector import IGNORE, load_ignore

    regions = load_ignore(IGNORE)
    split = {(c.set, c.name): c.split for c in cache}
    assert sum(len(b) for r in regions.values() for b in r.values()) >= 40
    for name, images in regions.items():
        for image, boxes in images.items():
            assert split[(name, image.removeprefix("images/"))] == "val", (name, image)
            with Image.open(root / name / image) as im:
                w, h = im.size
            for x0, y0, x1, y1 in boxes:
                assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h, (name, image)


def test_a_val_frame_in_the_list_is_refused(frames, tmp_path):
    root, cache = frames
    val = next(c for c in cache if c.split == "val")
    bad = tmp_path / "list.json"
    bad.write_text(json.dumps({"sets": {val.set: {f"images/{val.name}": [[1, 1, 20, 8]]}}}))
    with pytest.raises(ValueError, match="val frame"):
        load_train_ignore(bad, cache, root)
    bad.write_text(json.dumps({"sets": {"ro_dashcam": {"images/no_such_frame.jpg": [[1, 1, 20, 8]]}}}))
    with pytest.raises(ValueError, match="not a frame"):
        load_train_ignore(bad, cache, root)
    assert load_train_ignore(None, cache, root) == {}


def test_dont_care_boxes_follow_the_crop_and_the_flip():
    rng = np.random.default_rng(3)
    img = np.full((200, 300, 3), 90, np.uint8)
    plate = np.array([[[100, 100], [160, 100], [160, 115], [100, 115]]], np.float32)
    unlabelled = np.array([[120, 130, 150, 140]], np.float32)  # stays inside the crop for any translation
    out, quads, ignore = affine_crop(img, plate, rng, (320, 320), scale_range=(1.0, 1.0), max_rot=0.0,
                                     focus=0.0, ignore=unlabelled)
    assert len(quads) == 1 and len(ignore) == 1
    shift = quads[0, 0] - plate[0, 0]  # scale 1, no rotation: a pure translation
    np.testing.assert_allclose(ignore[0], unlabelled[0] + np.r_[shift, shift], atol=1e-3)
    _, _, flipped = hflip(out, quads, ignore)
    np.testing.assert_allclose(flipped[0, [0, 2]], 320 - ignore[0, [2, 0]], atol=1e-3)
    # a region pushed wholly outside the crop is dropped, not kept as an empty box
    _, _, none = affine_crop(img, np.zeros((0, 4, 2), np.float32), rng, (320, 320), scale_range=(1.0, 1.0),
                             max_rot=0.0, focus=0.0, ignore=np.array([[-500, -500, -400, -490]], np.float32))
    assert none.shape == (0, 4)


def test_frame_turns_reach_max_rot_on_a_share_rot_p_and_the_plate_quad_turns_with_the_pixels():
    """A rolled camera: crops turned up to max_rot degrees (det-0.7 trains with 14), on about rot_p of them,
    and the label quad follows the plate's pixels."""
    img = np.full((240, 320, 3), 90, np.uint8)
    img[100:120, 100:190] = 250  # a bright plate-sized bar
    plate = np.array([[[100, 100], [190, 100], [190, 120], [100, 120]]], np.float32)
    angles = []
    for seed in range(200):
        _, quads, _ = affine_crop(img, plate, np.random.default_rng(seed), (320, 320), scale_range=(1.0, 1.0),
                                  max_rot=14.0, focus=1.0, rot_p=0.5)
        if len(quads):
            d = quads[0, 1] - quads[0, 0]
            angles.append(abs(np.degrees(np.arctan2(d[1], d[0]))))
    angles = np.array(angles)
    assert len(angles) > 150
    turned = angles > 0.01
    assert 0.35 < turned.mean() < 0.65
    assert angles.max() <= 14.0 + 1e-3 and angles.max() > 10.0
    # the quad sits on the turned bar: its centre pixel is the bar's bright grey
    out, quads, _ = affine_crop(img, plate, np.random.default_rng(1), (320, 320), scale_range=(1.0, 1.0),
                                max_rot=14.0, focus=1.0, rot_p=1.0)
    cx, cy = quads[0].mean(0)
    assert out[int(round(cy)), int(round(cx))].min() > 200


def test_closeup_crops_show_a_large_plate_whole_and_the_default_draws_as_before():
    """A plate filling most of a letterboxed frame (a close photo) is cut by ordinary crops; a close-up crop
    scales one plate to 45-92 % of the crop width and keeps it whole. closeup_p=0 draws exactly as before."""
    img = np.full((300, 416, 3), 90, np.uint8)
    img[100:180, 40:370] = 250  # a 330 px plate, as a close photo letterboxed to 416
    plate = np.array([[[40, 100], [370, 100], [370, 180], [40, 180]]], np.float32)
    whole_plain = whole_close = 0
    for seed in range(100):
        _, quads, _ = affine_crop(img, plate, np.random.default_rng(seed), (320, 320), max_rot=14.0, rot_p=0.5)
        whole_plain += len(quads)
        out, quads, _ = affine_crop(img, plate, np.random.default_rng(seed), (320, 320), max_rot=14.0, rot_p=0.5,
                                    closeup_p=1.0)
        assert len(quads) == 1  # always whole, turned or not
        w = np.ptp(quads[0, :, 0])
        assert 0.4 * 320 < w < 0.95 * 320
        cx, cy = quads[0].mean(0)
        assert out[int(round(cy)), int(round(cx))].min() > 200  # the quad sits on the plate's pixels
        whole_close += 1
    assert whole_plain < 25 and whole_close == 100
    # small plates are scaled up at most closeup_max_scale (no blown-up blur)
    small = np.array([[[100, 100], [130, 100], [130, 108], [100, 108]]], np.float32)
    _, quads, _ = affine_crop(img, small, np.random.default_rng(0), (320, 320), max_rot=0.0, closeup_p=1.0)
    assert np.ptp(quads[0, :, 0]) == pytest.approx(60.0, abs=0.5)
    # off: the same draws and the same crop as without the option
    a = affine_crop(img, plate, np.random.default_rng(5), (320, 320))
    b = affine_crop(img, plate, np.random.default_rng(5), (320, 320), closeup_p=0.0)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_hard_frames_are_drawn_more_often_and_only_train_frames_may_be_listed(frames, tmp_path):
    root, cache = frames
    train = [c for c in cache if c.split == "train" and c.set == "ro_dashcam"]
    hard = tmp_path / "hard.json"
    hard.write_text(json.dumps({"sets": {"ro_dashcam": {
        f"images/{train[0].name}": {"false": 5, "missed": 0},   # capped at 3 errors
        f"images/{train[1].name}": {"false": 0, "missed": 1}}}}))
    weights = load_hard_frames(hard, cache, weight=2.0)
    assert weights == {("ro_dashcam", train[0].name): 7.0, ("ro_dashcam", train[1].name): 3.0}
    p = draw_probabilities(train, weights)
    assert p.sum() == pytest.approx(1.0)
    assert p[0] == pytest.approx(7 * p[2]) and p[1] == pytest.approx(3 * p[2])
    assert len(set(np.round(p[2:], 12))) == 1  # every other frame as likely as before
    uc3m = [c for c in cache if c.split == "train" and c.set == "uc3m"]
    assert len(set(np.round(draw_probabilities(uc3m, weights), 12))) == 1  # an unlisted set: uniform
    val = next(c for c in cache if c.split == "val")
    hard.write_text(json.dumps({"sets": {val.set: {f"images/{val.name}": {"false": 1, "missed": 0}}}}))
    with pytest.raises(ValueError, match="val frame"):
        load_hard_frames(hard, cache, weight=1.0)
    assert load_hard_frames(None, cache, weight=1.0) == {}


def test_hard_frame_errors_count_false_boxes_and_missed_plates():
    from detector_train.mine_hard_frames import count_errors

    labels = [[100, 100, 160, 115], [300, 100, 310, 103]]  # a plate, and one too narrow to count as missed
    dont_care = [[400, 200, 450, 212]]
    found = [([101, 100, 161, 116], 0.9),   # the plate
             ([401, 200, 449, 212], 0.5),   # a plate the labels lack: neither right nor wrong
             ([20, 20, 60, 35], 0.4)]       # a badge
    assert count_errors(found, labels, dont_care, min_width=20) == (1, 0)
    assert count_errors(found[1:], labels, dont_care, min_width=20) == (1, 1)
    assert count_errors([], labels, [], min_width=5) == (0, 2)
