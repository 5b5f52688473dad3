"""End to end on rendered videos: real detector + recognizer models + tracker, one passage per vehicle.

Videos are rendered into tmp_path from scripts/make_test_videos.py (real dashcam backgrounds, MIT)
and the bundled demo video is replayed; ground truth comes with each video. A larger evaluation
runs with `scripts/bench_pipeline.py eval --count 24`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from bench_pipeline import evaluate, frames_of, score  # noqa: E402
from make_test_videos import build_suite, write_video  # noqa: E402

from edge.factory import build_pipeline, load_models  # noqa: E402
from edge.motion import MotionConfig  # noqa: E402
from edge.tracker import TrackerConfig  # noqa: E402

MODELS = ROOT / "models"


@pytest.fixture(scope="module")
def models():
    missing = [n for n in ("detector.onnx", "recognizer.onnx") if not (MODELS / n).exists()]
    if missing:
        pytest.fail(f"models missing in {MODELS}: {', '.join(missing)} (trained by scripts/train_*.py)")
    return load_models(MODELS, threads=0)


@pytest.mark.slow
def test_rendered_videos_one_passage_per_vehicle_read_correctly(models, tmp_path, shared_data):
    videos = []
    for i, scene in enumerate(build_suite(4, seed=3)[2:]):  # stop-and-go, parked car; two at once in both
        videos.append(tmp_path / f"v{i}.mp4")
        write_video(scene, videos[-1], seed=3000 + i)
    r = evaluate(videos, *models)
    assert r.vehicles >= 5
    assert r.missed == 0 and r.duplicates == 0, f"{r.missed} missed, {r.duplicates} duplicate passages"
    assert r.one_passage == r.vehicles
    assert r.spurious == 0
    assert r.correct / (r.passages - r.spurious) >= 0.9, f"{r.correct}/{r.passages - r.spurious} read correctly"


@pytest.mark.slow
def test_bundled_demo_video(models):
    video = ROOT / "demo" / "demo.mp4"
    r = evaluate([video], *models)
    assert r.vehicles == 8
    assert r.one_passage == 8 and r.spurious == 0, f"one passage for {r.one_passage}/8, {r.spurious} spurious"
    assert r.correct >= 7, f"{r.correct}/8 demo plates read correctly"
    assert r.direction_ok >= 7


@pytest.mark.slow
def test_still_scene_skips_detection_and_reads(models, tmp_path, shared_data):
    """A parked car in an otherwise still street: one passage, and it is re-read only now and then."""
    import numpy as np
    from make_test_videos import Scene, Vehicle, dashcam_background
    from platesynth import render_plate

    rng = np.random.default_rng(1)
    parked = Vehicle(plate=render_plate(rng, "NL", layout="one_row"), start_s=0.0, lane_x=0.5,
                     z_of_t=[(0.0, 8.0), (30.0, 8.0)], front=True)
    scene = Scene(width=640, height=480, fps=10, duration_s=8, background=dashcam_background(5, 640, 480),
                  vehicles=[parked], noise=0.0)
    video = tmp_path / "parked.mp4"
    write_video(scene, video)
    pipe = build_pipeline(*models, tracking=TrackerConfig(), motion=MotionConfig())
    passages = []
    for frame in frames_of(video):
        passages += pipe.process(frame)
    passages += pipe.finish()
    s = pipe.stats
    assert len(passages) == 1
    assert s.reads <= s.frames / TrackerConfig().reread_every + 10


def test_scoring_assigns_passages_to_vehicles_by_time_and_text():
    """The evaluation itself: passages are matched to the vehicle they overlap in time."""
    from datetime import datetime, timezone

    from edge.types import Passage

    t = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def p(text, f0, f1, direction="approaching"):
        return Passage(track_id=0, text=text, formatted=text, country="NL", confidence=0.9, char_confidences=(),
                       alternatives=(), first_seen_ms=f0 * 100, last_seen_ms=f1 * 100, first_seen_utc=t,
                       last_seen_utc=t, frames=f1 - f0 + 1, direction=direction)

    truth = {"fps": 10, "vehicles": [
        {"text": "HXNB23", "first_frame": 0, "last_frame": 20, "readable_frames": 15, "direction": "approaching"},
        {"text": "12ABCD", "first_frame": 15, "last_frame": 40, "readable_frames": 20, "direction": "receding"},
        {"text": "ZZ99ZZ", "first_frame": 50, "last_frame": 52, "readable_frames": 2, "direction": "receding"},
        {"text": "KL123M", "first_frame": 60, "last_frame": 80, "readable_frames": 12, "direction": "receding"}]}
    r = score([p("HXNB23", 2, 18), p("12ABCO", 16, 30, "receding"), p("12ABCD", 31, 39, "receding"),
               p("QQ11QQ", 90, 95)], truth)
    assert (r.vehicles, r.optional, r.passages) == (3, 1, 4)
    assert (r.one_passage, r.missed, r.duplicates, r.spurious) == (1, 1, 1, 1)
    assert (r.correct, r.direction_ok) == (2, 3)


@pytest.mark.slow
def test_plates_outside_the_roi_or_too_small_give_no_passage(models):
    """Only the right half of the demo road is watched: receding cars (right lane) only."""
    import json

    video = ROOT / "demo" / "demo.mp4"
    truth = json.loads((ROOT / "demo" / "demo_truth.json").read_text())
    w, h = truth["width"], truth["height"]
    roi = [(w / 2 + 20, 0), (w, 0), (w, h), (w / 2 + 20, h)]
    pipe = build_pipeline(*models, tracking=TrackerConfig(), motion=MotionConfig(), roi=roi)
    passages = []
    for frame in frames_of(video):
        passages += pipe.process(frame)
    passages += pipe.finish()
    receding = {v["text"] for v in truth["vehicles"] if v["direction"] == "receding"}
    assert passages and {p.text for p in passages} <= receding
    assert len(passages) >= len(receding) - 1
    # a minimum plate width above every plate in the video: nothing is read at all
    pipe = build_pipeline(*models, tracking=TrackerConfig(), motion=MotionConfig(), min_plate_width=400)
    for frame in frames_of(video):
        if frame.index >= 80:  # the first two cars are enough
            break
        assert pipe.process(frame) == []
    assert pipe.finish() == [] and pipe.stats.reads == 0


def test_backgrounds_hold_no_plate_the_truth_does_not_list(shared_data):
    """The dashcam labels miss some plates (a parked car in a night frame): the test videos' backgrounds
    blur what the committed detector still finds, so no passage can come from a plate the truth lacks."""
    import csv

    from make_test_videos import DASHCAM, UNLABELLED_PLATE_SCORE, dashcam_background, plate_finder

    detector = plate_finder()  # the detector alone, as the video maker blurs with it (no verifier)
    with open(DASHCAM / "labels.csv", newline="") as f:
        images = sorted({r["image"] for r in csv.DictReader(f)})

    class LabelsOnly:  # the labelled plates blurred, nothing else (how the backgrounds were before)
        def detect(self, image):
            return []

    for name in ("images/nightride_type3_001_t0163.jpg", "images/nightride_type3_001_t0557.jpg"):
        idx = images.index(name)
        # the unlabelled plate is there (found at the score the backgrounds are blurred from; det-0.5 gives
        # the far parked car of t0557 0.39, just under the unit's 0.4) and is gone after the blur
        found = detector.detect(dashcam_background(idx, 640, 480, LabelsOnly()))
        assert [d for d in found if d.score >= UNLABELLED_PLATE_SCORE]
        assert not [d for d in detector.detect(dashcam_background(idx, 640, 480)) if d.score >= 0.4]


@pytest.mark.slow
def test_evidence_frames_show_no_other_vehicles_plate(models):
    """A kept evidence frame goes out with a hit: the unit's own models must find no readable plate
    in it but the passage's own (the demo's S30VST frame showed another car's RJZ02K at 1.0)."""
    detector, recognizer = models
    video = ROOT / "demo" / "demo.mp4"
    pipe = build_pipeline(*models, tracking=TrackerConfig(), motion=MotionConfig(), keep_frames=True)
    passages = []
    for frame in frames_of(video):
        passages += pipe.process(frame)
    passages += pipe.finish()
    framed = [p for p in passages if p.best_frame is not None]
    assert len(framed) >= 6
    others = 0
    for p in framed:
        for d in detector.detect(p.best_frame):
            read = recognizer.read(p.best_frame, d.corners)
            if read.text and read.text != p.text and read.confidence >= 0.2:
                others += 1
    assert others == 0, f"{others} other plates readable in {len(framed)} evidence frames"
