"""Recognizer serving with the real ONNX model on real and rendered crops; model contract helpers."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.grammar import is_valid_nl
from edge.modelcontract import ModelContract, ModelContractError, make_session, read_metadata
from edge.recognizer import PlateRecognizer, line_image, rectify
from edge.types import PlateRead

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "recognizer.onnx"
sys.path.insert(0, str(ROOT / "scripts"))

from platesynth import degrade, render_plate  # noqa: E402


@pytest.fixture(scope="module")
def rec() -> PlateRecognizer:
    assert MODEL.is_file(), f"{MODEL} is missing: the recognizer model is part of the repository"
    return PlateRecognizer(MODEL, threads=1)


def _eu2(shared_data: Path, country: str | None = None) -> list[tuple[np.ndarray, str, str]]:
    root = shared_data / "ocr" / "openalpr_eu2"
    with open(root / "labels.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if country is None or r["country"] == country]
    return [(cv2.imread(str(root / r["image"])), r["text"], r["country"]) for r in rows]


def test_contract_carries_everything_serving_needs():
    meta = read_metadata(MODEL)
    for key in ("charset", "blank_index", "input_height", "input_width", "input_channels", "mean", "std",
                "version", "two_row", "two_row_max_aspect"):
        assert key in meta, key
    c = ModelContract.from_onnx(MODEL)
    assert (c.input_channels, c.kind) == (1, "plate_recognizer")
    assert c.input_height > 0 and c.input_width > c.input_height
    sess = make_session(MODEL, threads=1)
    assert sess.get_session_options().intra_op_num_threads == 1
    assert MODEL.stat().st_size < 8_000_000
    assert int(meta["parameters"]) <= 2_000_000


def test_contract_errors_name_the_problem(tmp_path):
    with pytest.raises(ModelContractError, match="not found"):
        make_session(tmp_path / "nope.onnx", 1)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelContractError, match="bad.onnx"):
        ModelContract.from_onnx(bad)


def test_rectify_undoes_a_perspective_view():
    rng = np.random.default_rng(3)
    plate = render_plate(rng, "NL", layout="one_row", scale=0.5)
    h, w = plate.image.shape[:2]
    src = np.array(plate.corners, np.float32)
    dst = np.array([[100, 80], [100 + w * 0.9, 60], [110 + w * 0.95, 60 + h * 1.1], [95, 80 + h]], np.float32)
    scene = np.full((400, 600, 3), 90, np.uint8)
    M = cv2.getPerspectiveTransform(src, dst)
    scene = cv2.warpPerspective(plate.image, M, (600, 400), dst=scene, borderMode=cv2.BORDER_TRANSPARENT)
    crop = rectify(scene, dst)
    back = cv2.resize(crop, (w, h))
    assert np.abs(back.astype(int) - plate.image.astype(int)).mean() < 25
    with pytest.raises(ValueError, match="corners"):
        rectify(scene, [(0, 0), (1, 1)])
    with pytest.raises(ValueError, match="too small"):
        rectify(scene, [(5, 5), (5.5, 5), (5.5, 5.5), (5, 5.5)])


def test_two_row_line_puts_top_row_left_of_bottom_row():
    img = np.full((100, 140), 255, np.uint8)
    img[10:40, 20:120] = 0  # top row ink
    line = line_image(img, 32, 128, two_row=True)
    assert line.shape == (32, 128)
    left, right = line[:, :64], line[:, 64:]
    assert left.mean() < right.mean()  # the top half (with ink) went left
    assert line_image(img, 32, 128, two_row=False).shape == (32, 128)


def test_reads_real_dutch_two_row_crops(rec, shared_data):
    items = _eu2(shared_data, "nl")
    assert len(items) == 28
    reads = [rec.read_crop(img) for img, _, _ in items]
    exact = np.mean([r.text == t for r, (_, t, _) in zip(reads, items)])
    assert exact >= 0.95, f"only {exact:.0%} of the real Dutch crops read exactly"
    for r in reads:
        assert r.text == r.text.upper() and r.text.isalnum()
        assert len(r.char_confidences) == len(r.text)
        assert 0.0 <= r.confidence <= 1.0
        if r.country == "NL":
            assert is_valid_nl(r.text) and r.formatted.count("-") == 2
        scores = [s for _, s in r.alternatives]
        assert scores == sorted(scores, reverse=True)
        assert all(a != r.text for a, _ in r.alternatives)


def test_reads_real_foreign_crops_without_forcing_them_dutch(rec, shared_data):
    items = [x for x in _eu2(shared_data) if x[2] != "nl"]
    reads = [rec.read_crop(img) for img, _, _ in items]
    exact = np.mean([r.text == t for r, (_, t, _) in zip(reads, items)])
    assert exact >= 0.7, f"only {exact:.0%} of the real foreign crops read exactly"
    # A 7-character foreign plate must never be bent into a 6-character Dutch sidecode.
    long_ok = [r for r, (_, t, _) in zip(reads, items) if len(t) == 7 and r.text == t]
    assert long_ok and all(r.country != "NL" for r in long_ok)


def test_coats_of_arms_are_not_read_as_letters(rec, shared_data):
    """Austrian arms between district and number were read as a letter ("W86469A" as "WF86469A");
    the crop is read again with the coloured marks painted out and the doubtful letter dropped."""
    plain = PlateRecognizer(MODEL, threads=1, ignore_marks=False, reread_below=0.0)
    items = [x for x in _eu2(shared_data, "at")
             if x[1] in ("W86469A", "W2829H", "FR1SFK", "W1518B", "W3706L", "W44ALR")]
    assert len(items) == 6  # the last three: Vienna's arms, a shield cut in four by its cross
    for img, text, _ in items:
        assert plain.read_crop(img).text != text  # the arms give an extra character
        assert rec.read_crop(img).text == text
    # plates without coloured marks and yellow Dutch plates read exactly as before
    for img, text, _ in _eu2(shared_data, "nl")[:10]:
        assert rec.read_crop(img).text == plain.read_crop(img).text


def test_a_character_is_dropped_only_if_it_was_doubtful_and_on_a_mark():
    from edge.recognizer import _only_marks_dropped

    def r(text, confs):
        return PlateRead(text=text, formatted=text, country="", confidence=float(np.prod(confs)),
                         char_confidences=tuple(confs))

    first = r("WF86469A", [1.0, 0.34, 1.0, 1.0, 1.0, 1.0, 0.98, 1.0])
    again = r("W86469A", [1.0] * 7)
    on_f = (False, True) + (False,) * 6
    assert _only_marks_dropped(first, again, on_f)
    assert not _only_marks_dropped(first, again, (False,) * 8)  # the doubtful F is not where a mark was
    assert not _only_marks_dropped(r("WF86469A", [1.0, 0.9] + [1.0] * 6), again, on_f)  # F was read surely
    assert not _only_marks_dropped(first, r("W86469A", [0.2] * 7), on_f)  # the re-read is less sure
    doubt_elsewhere = r("WF86469A", [1.0, 0.34, 1.0, 0.5, 1.0, 1.0, 0.98, 1.0])
    assert not _only_marks_dropped(doubt_elsewhere, again, on_f)  # a poor read is not made to look sure


def test_reframed_copies_pad_or_trim_each_side():
    from edge.recognizer import reframed

    crop = np.arange(40 * 100, dtype=np.uint8).reshape(40, 100)
    assert reframed(crop, 0.1, 0.0).shape == (40, 120)
    assert reframed(crop, 0.0, 0.1).shape == (48, 100)
    trimmed = reframed(crop, -0.1, -0.1)
    assert trimmed.shape == (32, 80) and trimmed[0, 0] == crop[4, 10]
    padded = reframed(crop, 0.05, 0.05)
    assert padded[0, 0] == crop[0, 0] and (padded[2:-2, 5:-5] == crop).all()  # edge pixels repeated
    assert reframed(np.zeros((8, 12), np.uint8), -0.3, 0.0) is None  # too little left to read


def test_doubtful_reads_are_read_again_from_reframed_crops(rec, shared_data):
    """A read with a character under 0.9 is read again from padded and trimmed copies of the crop;
    the text the copies agree on wins. Confident reads are never changed."""
    once = PlateRecognizer(MODEL, threads=1, reread_below=0.0)
    items = _eu2(shared_data)
    changed = better = worse = 0
    for img, text, _ in items:
        first, final = once.read_crop(img), rec.read_crop(img)
        if first.text and min(first.char_confidences) >= 0.9:
            assert final == first
        changed += final.text != first.text
        better += final.text == text and first.text != text
        worse += first.text == text and final.text != text
    assert changed and better > worse, (changed, better, worse)


def test_reads_rendered_plates_through_corners(rec):
    rng = np.random.default_rng(11)
    ok = n = 0
    for layout in ("one_row", "two_row"):
        for _ in range(15):
            plate = render_plate(rng, "NL", layout=layout, scale=0.5)
            d = degrade(rng, plate.image, plate.corners, strength=0.3, mode="box", out_width=160)
            r = rec.read(d.image, d.corners)
            ok += r.text == plate.text
            n += 1
    assert ok / n >= 0.8, f"{ok}/{n} rendered Dutch plates read exactly"


def test_grammar_settles_lookalikes_only_for_dutch_reads(rec):
    # Probabilities spelling X S N B 2 O, where the last frame prefers O over 0: Dutch gives 0.
    classes = rec.classes
    T = 32
    probs = np.full((T, len(classes)), 1e-4, np.float32)
    probs[:, rec.blank] = 1.0
    text = "XSNB2O"
    for i, ch in enumerate(text):
        t = 2 + i * 5
        probs[t, :] = 1e-4
        probs[t, classes.index(ch)] = 0.8
        if ch == "O":
            probs[t, classes.index("0")] = 0.15
    probs /= probs.sum(1, keepdims=True)
    r = rec._decode_read(probs)
    assert r.text == "XSNB20" and r.country == "NL" and r.formatted == "XS-NB-20"
    assert len(r.char_confidences) == 6 and r.char_confidences[-1] < 0.5
    assert "XSNB2O" in [a for a, _ in r.alternatives]  # what the pixels favoured stays an alternative
    plain = PlateRecognizer(MODEL, threads=1, dutch_grammar=False)._decode_read(probs)
    assert plain.text == "XSNB2O"


def test_bad_crop_is_a_clear_error(rec):
    with pytest.raises(ValueError, match="crop"):
        rec.read_crop(np.zeros((0, 0, 3), np.uint8))


def test_int8_copy_reads_real_crops_as_well_as_the_float_model(rec, shared_data):
    """models/recognizer-int8.onnx (scripts/quantize_recognizer.py, calibrated on training-side crops
    only) is a drop-in choice for models.recognizer: same contract, and on the real two-row crops of
    openalpr_eu2 (never trained or calibrated on) it reads as many plates right as the float model."""
    int8 = PlateRecognizer(ROOT / "models" / "recognizer-int8.onnx", threads=1)
    assert int8.version == rec.version + "-int8"
    meta, ref = read_metadata(ROOT / "models" / "recognizer-int8.onnx"), read_metadata(MODEL)
    assert "int8" in meta["quantization"]
    assert {k: v for k, v in meta.items() if k not in ("version", "quantization")} == \
        {k: v for k, v in ref.items() if k != "version"}
    items = _eu2(shared_data)
    floats, ints = [rec.read_crop(img) for img, _, _ in items], [int8.read_crop(img) for img, _, _ in items]
    right_f = sum(r.text == t for r, (_, t, _) in zip(floats, items))
    right_i = sum(r.text == t for r, (_, t, _) in zip(ints, items))
    same = sum(a.text == b.text for a, b in zip(floats, ints))
    assert right_i >= right_f - 2 and same >= 0.9 * len(items), (right_f, right_i, same)
    nl = [r.text == t for r, (_, t, c) in zip(ints, items) if c == "nl"]
    assert sum(nl) >= 0.95 * len(nl)
