"""scripts/evaluate.py: split rules on the real label files, scoring with known outcomes, and a run of
the real models on a handful of real frames and crops whose figures are checked against its records.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import evaluate as ev  # noqa: E402

MODELS = ROOT / "models"


# ---- split rules, checked against the counts in ../shared/data/README.md ----------------------

def test_split_rules_give_the_readme_validation_counts(shared_data):
    uc3m = ev.load_stills("detect/uc3m", shared_data)
    assert (len(uc3m), sum(len(s.plates) for s in uc3m)) == (395, 491)
    ro = ev.load_stills("detect/ro_dashcam", shared_data)
    assert (len(ro), sum(len(s.plates) for s in ro)) == (106, 131)
    assert {s.image.name.rsplit("_t", 1)[0] for s in ro} == {"dayride_type1_002", "dayride_type1_003",
                                                        "nightride_type3_001"}
    assert all(s.country == "RO" for s in ro) and all(s.country == "ES" for s in uc3m)
    assert len(ev.load_crops("ocr/uc3m", shared_data)) == 491
    assert len(ev.load_crops("ocr/openalpr_eu2", shared_data)) == 239  # held out of training: all of it
    # openalpr_us_br: the detector's family split; the fixed-camera wts-lg frames are training data
    us_br = ev.load_stills("detect/openalpr_us_br", shared_data)
    assert us_br and not any(s.image.name.startswith("us_wts-lg") for s in us_br)
    everything = ev.load_stills("detect/openalpr_us_br", shared_data, ("train", "val"))
    assert len(everything) == 336 and len(us_br) < 336
    # openalpr_br: recognizer val = CRC32(text) % 5 == 0, so no plate text is on both sides
    val = {c.text for c in ev.load_crops("ocr/openalpr_br", shared_data)}
    train = {c.text for c in ev.load_crops("ocr/openalpr_br", shared_data, ("train",))}
    assert val and train and not val & train


# ---- scoring with known outcomes ------------------------------------------------------------

def test_text_scoring_treats_hidden_characters_as_free():
    assert ev.text_distance("074?C?V", "0741C9V") == 0 and ev.is_exact("074?C?V", "0741C9V")
    # the recognizer reads nothing under a privacy box: a hidden position may be skipped
    assert ev.is_exact("074?C?V", "074CV") and ev.is_exact("074?C?V", "074C9V")
    assert ev.text_distance("074?C?V", "075CV") == 1 and not ev.is_exact("074?C?V", "075CV")
    assert ev.text_distance("074?C?V", "07CV") == 1 and ev.text_distance("074?C?V", "074CVVV") == 1
    assert ev.text_distance("XSNB23", "XSNB2") == 1 and not ev.is_exact("XSNB23", "XSNB2")
    assert ev.text_distance("XSNB23", "XSN823") == 1
    assert ev.text_distance("AB", "") == 2 and ev.visible("074?C?V") == 5
    r = ev.ReadRecord("s", "i", "ES", "074?C?V", "O74XCXV", 0.5)  # one visible error of five
    assert r.chars_correct == 4 and not r.exact
    assert ev.ReadRecord("s", "i", "NL", "XSNB23", "", 0.0).chars_correct == 0
    assert ev.ReadRecord("s", "i", "NL", "AB", "ABCDEF", 0.0).chars_correct == 0  # floored, never negative


def test_still_scoring_on_real_labels_with_known_predictions(shared_data):
    stills = [s for s in ev.load_stills("detect/uc3m", shared_data) if len(s.plates) >= 2][:4]
    assert len(stills) == 4
    total, records = ev.DetFigures(), []
    expected_tp = expected_dets = plates = 0
    for k, s in enumerate(stills):
        boxes = [p.box for p in s.plates]
        reads = [(p.text.replace("?", "Z"), 0.99) for p in s.plates]  # right at every visible position
        scores = [0.9] * len(boxes)
        if k == 1:  # one plate missed: its box is moved by its own width (IoU 0)
            x1, y1, x2, y2 = boxes[0]
            boxes[0] = (x2, y1, 2 * x2 - x1, y2)
        if k == 2:  # one extra detection far from every plate (a false positive), one misread
            boxes.append((0.0, 0.0, 1.0, 1.0))
            scores.append(0.5)
            reads.append(("", 0.1))
            t = s.plates[1].text
            i = next(n for n, c in enumerate(t) if c != "?")
            reads[1] = (t[:i] + ("1" if t[i] != "1" else "2") + t[i + 1:].replace("?", "Z"), 0.95)
        figs, recs = ev.score_still(s, boxes, scores, reads)
        total.add(figs)
        records += recs
        plates += len(s.plates)
        expected_dets += len(boxes)
        expected_tp += len(s.plates) - (k == 1)
    assert (total.images, total.plates, total.detections, total.true_pos) == (4, plates, expected_dets, expected_tp)
    f = ev.read_figures(records)
    with_text = sum(1 for s in stills for p in s.plates if p.text)
    missed_text = 1 if stills[1].plates[0].text else 0
    assert f.plates == with_text and f.detected == with_text - missed_text
    assert f.exact == with_text - missed_text - 1  # the missed plate and the misread
    assert f.confident_wrong == 1  # the misread at 0.95
    missed_chars = ev.visible(stills[1].plates[0].text)
    assert f.chars_correct == f.chars - missed_chars - 1
    worst = ev.worst_misreads(records, 5)
    assert [(w.truth, w.confidence) for w in worst] == [(stills[2].plates[1].text, 0.95)]


def test_box_matching_is_one_to_one_and_needs_iou_half():
    gt = [(0, 0, 10, 10)]
    assert ev.match_boxes([(0, 0, 10, 10), (1, 0, 11, 10)], [0.5, 0.9], gt) == {1: 0}  # best score wins
    assert ev.match_boxes([(5, 0, 15, 10)], [0.9], gt) == {}  # IoU 1/3
    assert ev.iou((0, 0, 10, 10), (0, 0, 10, 5)) == pytest.approx(0.5)


def test_update_doc_replaces_only_its_block(tmp_path):
    doc = tmp_path / "p.md"
    doc.write_text("a\n<!-- BEGIN evaluate.py -->\nold\n<!-- END evaluate.py -->\nb\n")
    ev.update_doc(doc, "evaluate.py", "new table\n")
    assert doc.read_text() == "a\n<!-- BEGIN evaluate.py -->\nnew table\n<!-- END evaluate.py -->\nb\n"
    with pytest.raises(SystemExit, match="markers"):
        ev.update_doc(doc, "bench.py", "x")


# ---- the real models on a handful of real frames and crops ---------------------------------

@pytest.fixture(scope="module")
def model_paths():
    missing = [n for n in ("detector.onnx", "recognizer.onnx") if not (MODELS / n).exists()]
    if missing:
        pytest.fail(f"models missing in {MODELS}: {', '.join(missing)} (trained by scripts/train_*.py)")
    return MODELS / "detector.onnx", MODELS / "recognizer.onnx"


def test_run_on_real_frames_and_crops_reports_what_its_records_say(model_paths, shared_data, tmp_path):
    det, rec = model_paths
    out = tmp_path / "e.json"
    md = tmp_path / "e.md"
    rc = ev.main(["--data", str(shared_data), "--sets", "detect/ro_dashcam,ocr/openalpr_eu2", "--limit", "6",
                  "--videos", "--detector", str(det), "--recognizer", str(rec), "--threads", "1",
                  "--json", str(out), "--markdown", str(md)])
    assert rc == 0
    data = json.loads(out.read_text())
    ro, eu2 = data["sets"]
    assert ro["set"] == "detect/ro_dashcam" and ro["detection"]["images"] == 6
    d = ro["detection"]
    assert 0 <= d["true_pos"] <= min(d["plates"], d["detections"])
    assert d["recall"] == pytest.approx(d["true_pos"] / d["plates"])
    assert eu2["reading"]["plates"] == 6 and eu2["detection"] is None

    # the same crops read directly through the recognizer give the same figures
    from edge.recognizer import PlateRecognizer
    recognizer = PlateRecognizer(rec, threads=1)
    crops = ev.subsample(ev.load_crops("ocr/openalpr_eu2", shared_data), 6)
    reads = [recognizer.read_crop(ev.read_image(c.image)) for c in crops]
    assert eu2["reading"]["exact"] == sum(ev.is_exact(c.text, r.text) for c, r in zip(crops, reads))
    assert eu2["reading"]["chars_correct"] == sum(
        max(0, ev.visible(c.text) - ev.text_distance(c.text, r.text)) for c, r in zip(crops, reads))
    assert set(data["countries"]) >= {"RO"} | {c.country for c in crops}
    assert "| detect/ro_dashcam | val (sequences) | 6 |" in md.read_text()


def test_bench_report_prints_the_share_of_frames_and_detections_that_skipped_work():
    """Issue 5: the benchmark prints how much detection and recognition the motion gate and the
    tracker saved, per video and thread mode (checked on the committed output of a real run)."""
    import bench

    data = json.loads((ROOT / "docs" / "results" / "bench.json").read_text())
    md = bench.report(data["results"], data["machine"], data["header"])
    for key, r in data["results"].items():
        video, mode = key.split("|")
        skip_det = 1 - r["detect_frames"] / r["frames"]
        skip_read = r["skipped_reads"] / (r["reads"] + r["skipped_reads"])
        row = next(line for line in md.splitlines()
                   if line.startswith(f"| {video} | {mode} | {r['frames']} |"))
        assert f"{r['detect_frames']} ({skip_det:.0%})" in row
        assert f"({r['skipped_reads']}, {skip_read:.0%})" in row
    assert any("640x480" in k for k in data["results"]) and any("1920x1080" in k for k in data["results"])


def test_detector_tally_as_the_unit_reads_drops_narrow_detections():
    """eval_detector's third table: a detection narrower than the unit's min_plate_width is neither a
    found plate nor a false one (the pipeline never reads it); the second table still counts it false."""
    import eval_detector as ed

    wide, narrow = (100.0, 100.0, 180.0, 120.0), (300.0, 50.0, 320.0, 56.0)
    corners = ed.box_corners(wide)
    t = ed.Tally()
    t.add([(0.9, wide, corners), (0.8, narrow, ed.box_corners(narrow))], [(wide, corners)])
    t.add([(0.9, (10.0, 10.0, 46.0, 20.0), ed.box_corners((10.0, 10.0, 46.0, 20.0)))],
          [((10.0, 10.0, 50.0, 20.0), ed.box_corners((10.0, 10.0, 50.0, 20.0)))])  # a 40 px plate boxed 36 px
    kept = t.at(0.5, 40.0)
    assert (kept["plates"], kept["detections"], kept["recall"], kept["precision"]) == (2, 3, 1.0, 2 / 3)
    unit = t.at(0.5, 40.0, drop_narrow=True)
    assert (unit["plates"], unit["detections"], unit["recall"], unit["precision"]) == (2, 1, 0.5, 1.0)


def test_detector_runs_compared_on_the_plates_both_find():
    """--per-plate lists each found plate with its corner error; compare_detector_runs keeps a box-fit
    change (same plates, other corners) apart from a found-plates change (a verifier keeping other boxes)."""
    import compare_detector_runs as cmp
    import eval_detector as ed

    plate_a, plate_b = (100.0, 100.0, 200.0, 120.0), (300.0, 100.0, 400.0, 120.0)
    gts = [(plate_a, ed.box_corners(plate_a)), (plate_b, ed.box_corners(plate_b))]
    off_a = [(x + 2.0, y) for x, y in ed.box_corners(plate_a)]  # 2 px off on a 100 px plate
    before, after = ed.Tally(), ed.Tally()
    before.add([(0.9, plate_a, off_a), (0.8, plate_b, ed.box_corners(plate_b))], gts, key="f1.jpg")
    after.add([(0.9, plate_a, off_a)], gts, key="f1.jpg")  # plate_b (a perfect fit) no longer found
    runs = [{"s": {"at_score": t.at(0.5, per_plate=True)}} for t in (before, after)]
    assert runs[0]["s"]["at_score"]["per_plate"] == [["f1.jpg", 0, pytest.approx(0.02)], ["f1.jpg", 1, 0.0]]
    assert runs[0]["s"]["at_score"]["corner_err"] == pytest.approx(0.01)
    assert runs[1]["s"]["at_score"]["corner_err"] == pytest.approx(0.02)  # the mean doubles ...
    r = cmp.compare(*runs)["s"]
    assert r["common"] == 1 and r["corner_before"] == pytest.approx(r["corner_after"])  # ... the fit does not
    assert (r["only_before"], r["only_after"]) == (1, 0) and r["only_before_corner"] == 0.0
    with pytest.raises(SystemExit, match="per-plate"):
        cmp.compare({"s": {"at_score": before.at(0.5)}}, runs[1])
