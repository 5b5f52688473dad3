#!/usr/bin/env python3
"""Full-pipeline benchmark and passage accuracy on rendered videos with known plates.

bench: frames/s of motion gate + detector + recognizer + tracker on one core and on all cores,
for a 640x480 and a 1920x1080 rendered video, with the share of frames that skipped detection
(motion gate) and of detections that skipped recognition (confidently read tracks).

eval: renders N test videos (scripts/make_test_videos.py), runs them through the real models and
the tracker, and counts passages per vehicle and correct reads (also used by
tests/test_passages_video.py). Plate texts are only compared in memory, never printed, except
with --show-errors for debugging on synthetic plates.

Usage:
    .venv/bin/python scripts/bench_pipeline.py bench [--seconds 20]
    .venv/bin/python scripts/bench_pipeline.py eval --count 24 --seed 7 [--size 640x480] [--show-errors]
    .venv/bin/python scripts/bench_pipeline.py eval --video demo/demo.mp4
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

from edge.factory import build_pipeline, load_models  # noqa: E402
from edge.motion import MotionConfig  # noqa: E402
from edge.tracker import edit_distance  # noqa: E402
from edge.tracker import TrackerConfig  # noqa: E402
from edge.types import Frame, Passage  # noqa: E402

MODELS = ROOT / "models"
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
MIN_READABLE_FRAMES = 5  # vehicles with fewer frames of a >= 40 px plate need not give a passage


def frames_of(video: Path, fps: float | None = None):
    """Frames of a video file, timed by their position in the video (as a replay is)."""
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise FileNotFoundError(f"cannot open video {video}")
    rate = fps or cap.get(cv2.CAP_PROP_FPS) or 12.5
    i = 0
    try:
        while True:
            ok, img = cap.read()
            if not ok:
                return
            ms = i * 1000.0 / rate
            yield Frame(image=img, index=i, mono_ms=ms, utc=T0 + timedelta(milliseconds=ms), source="bench")
            i += 1
    finally:
        cap.release()


@dataclass
class VideoResult:
    vehicles: int = 0  # vehicles that must give a passage
    optional: int = 0  # barely visible vehicles: a passage is allowed, not required
    passages: int = 0
    one_passage: int = 0  # required vehicles with exactly one passage
    missed: int = 0  # required vehicles without a passage
    duplicates: int = 0  # extra passages of a vehicle
    spurious: int = 0  # passages that belong to no vehicle
    correct: int = 0  # passages whose text equals their vehicle's plate
    direction_ok: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)  # (truth, read), only for --show-errors

    def add(self, o: "VideoResult") -> None:
        for k in ("vehicles", "optional", "passages", "one_passage", "missed", "duplicates", "spurious", "correct",
                  "direction_ok"):
            setattr(self, k, getattr(self, k) + getattr(o, k))
        self.errors += o.errors


def score(passages: list[Passage], truth: dict) -> VideoResult:
    """Assign every passage to the vehicle it overlaps in time with the most similar text (then the
    longest overlap), then count."""
    fps = truth["fps"]
    vs = truth["vehicles"]
    owner: dict[int, list[Passage]] = {i: [] for i in range(len(vs))}
    res = VideoResult(passages=len(passages))
    for p in passages:
        a, b = p.first_seen_ms * fps / 1000, p.last_seen_ms * fps / 1000
        best, best_key = None, None
        for i, v in enumerate(vs):
            overlap = min(b, v["last_frame"]) - max(a, v["first_frame"]) + 1
            key = (overlap > 0, -edit_distance(p.text, v["text"]), overlap)
            if overlap > 0 and (best_key is None or key > best_key):
                best, best_key = i, key
        if best is None:
            res.spurious += 1
        else:
            owner[best].append(p)
    for i, v in enumerate(vs):
        required = v["readable_frames"] >= MIN_READABLE_FRAMES
        got = owner[i]
        if required:
            res.vehicles += 1
            res.one_passage += len(got) == 1
            res.missed += not got
        else:
            res.optional += 1
        res.duplicates += max(0, len(got) - 1)
        for p in got:
            res.correct += p.text == v["text"]
            res.direction_ok += p.direction == v["direction"]
            if p.text != v["text"]:
                res.errors.append((v["text"], p.text))
    return res


def run_video(video: Path, pipeline) -> list[Passage]:
    out: list[Passage] = []
    for frame in frames_of(video):
        out += pipeline.process(frame)
    out += pipeline.finish()
    return out


def evaluate(videos: list[Path], detector, recognizer, tracking: TrackerConfig | None = None,
             min_plate_width: float = 0) -> VideoResult:
    total = VideoResult()
    for video in videos:
        truth = json.loads(video.with_suffix(".json").read_text()) if video.with_suffix(".json").exists() \
            else json.loads((video.parent / "demo_truth.json").read_text())
        pipe = build_pipeline(detector, recognizer, tracking=tracking, motion=MotionConfig(),
                              min_plate_width=min_plate_width)
        total.add(score(run_video(video, pipe), truth))
    return total


def _report(r: VideoResult, show_errors: bool) -> str:
    n = max(r.passages - r.spurious, 1)
    lines = [f"vehicles {r.vehicles} (+{r.optional} barely visible), passages {r.passages}",
             f"exactly one passage: {r.one_passage}/{r.vehicles}, missed {r.missed}, duplicates {r.duplicates}, "
             f"spurious {r.spurious}",
             f"read correctly: {r.correct}/{r.passages - r.spurious} = {100 * r.correct / n:.1f}%, "
             f"direction right: {r.direction_ok}/{r.passages - r.spurious}"]
    if show_errors:
        lines += [f"  truth {t} read {p}" for t, p in r.errors]
    return "\n".join(lines)


def _one_core() -> None:
    """Pin this process to one CPU and keep OpenCV single-threaded (the Pi-per-camera budget)."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    cv2.setNumThreads(1)


def bench(seconds: float, sizes: list[tuple[int, int]], cores: str, models: Path = MODELS) -> list[dict]:
    from make_test_videos import dashcam_background, make_scene, write_video

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for w, h in sizes:
            rng = np.random.default_rng(11)
            scene = make_scene(rng, dashcam_background(3, w, h), n_vehicles=max(2, int(seconds / 3)))
            scene.duration_s = max(scene.duration_s, seconds)
            video = Path(tmp) / f"bench_{w}x{h}.mp4"
            write_video(scene, video, seed=11)
            frames = list(frames_of(video))
            for mode in ([cores] if cores != "both" else ["one", "all"]):
                if mode == "one":
                    _one_core()
                threads = 1 if mode == "one" else 0
                det, rec = load_models(models, threads=threads)
                pipe = build_pipeline(det, rec, tracking=TrackerConfig(), motion=MotionConfig())
                pipe.process(frames[0])  # warm-up (session allocation)
                pipe = build_pipeline(det, rec, tracking=TrackerConfig(), motion=MotionConfig())
                t0 = time.perf_counter()
                for f in frames:
                    pipe.process(f)
                pipe.finish()
                dt = time.perf_counter() - t0
                s = pipe.stats
                rows.append({"size": f"{w}x{h}", "cores": mode if mode == "one" else f"all ({os.cpu_count()})",
                             "frames": s.frames, "fps": round(s.frames / dt, 2),
                             "skipped_detection": round(s.skipped_detection / max(s.frames, 1), 3),
                             "skipped_reads": round(s.skipped_reads / max(s.reads + s.skipped_reads, 1), 3),
                             "detect_ms": round(s.detect_ms / max(s.frames - s.skipped_detection, 1), 1),
                             "read_ms": round(s.read_ms / max(s.reads, 1), 1)})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench", help="frames/s on one core and on all cores")
    b.add_argument("--seconds", type=float, default=20.0, help="length of each rendered video")
    b.add_argument("--cores", choices=["one", "all", "both"], default="both",
                   help="'one' pins the process to one CPU; 'both' runs all-cores first, then one core")
    b.add_argument("--sizes", default="640x480,1920x1080")
    e = sub.add_parser("eval", help="passage accuracy on rendered videos")
    e.add_argument("--count", type=int, default=24)
    e.add_argument("--seed", type=int, default=7)
    e.add_argument("--size", default="640x480")
    e.add_argument("--video", type=Path, help="evaluate this video (its truth JSON beside it) instead")
    e.add_argument("--show-errors", action="store_true", help="print misread synthetic plates (debugging only)")
    for p in (b, e):
        p.add_argument("--models", type=Path, default=MODELS, help="folder with detector.onnx and recognizer.onnx")
    args = ap.parse_args(argv)
    if args.cmd == "bench":
        sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
        # all cores first: pinning to one core cannot be undone inside the process
        bench(args.seconds, sizes, "all" if args.cores == "both" else args.cores, args.models)
        if args.cores == "both":
            bench(args.seconds, sizes, "one", args.models)
        return 0
    det, rec = load_models(args.models, threads=0)
    if args.video:
        videos = [args.video]
    else:
        from make_test_videos import build_suite, write_video
        w, h = (int(v) for v in args.size.split("x"))
        tmp = Path(tempfile.mkdtemp(prefix="passages_"))
        videos = []
        for i, scene in enumerate(build_suite(args.count, args.seed, w, h)):
            videos.append(tmp / f"v{i:02d}.mp4")
            write_video(scene, videos[-1], seed=args.seed * 1000 + i)
    r = evaluate(videos, det, rec)
    print(_report(r, args.show_errors))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
