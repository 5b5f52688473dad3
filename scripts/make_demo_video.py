#!/usr/bin/env python3
"""The bundled demo video: a licence-clean road scene drawn from scratch with rendered Dutch plates.

Everything in it is generated here (procedural road, simple car bodies, plates from
scripts/platesynth drawn with the system's free fonts), so it may be shipped with the project.
Deterministic for a given seed. Writes:

    demo/demo.mp4          ~20 s, 960x540, 12.5 fps, mp4v (checked to decode with cv2.VideoCapture)
    demo/demo_truth.json   the plates, when they are in view, direction of travel
    demo/demo_list.csv     three of its plates, one per list of demo/lists.yaml (plate,list_id,reason_code,valid_until)

Usage:
    .venv/bin/python scripts/make_demo_video.py [--out demo] [--seed 5]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from make_test_videos import (BODY_COLOURS, Scene, Vehicle, _drive, procedural_background,  # noqa: E402
                              write_video)
from platesynth import render_plate  # noqa: E402

WIDTH, HEIGHT, FPS = 960, 540, 12.5
MAX_BYTES = 5_000_000
# (vehicle index, list id of demo/lists.yaml, reason code): one wanted car per demo list
DEMO_LISTED = ((1, "nl-stolen", "DEMO-STOLEN"), (4, "nl-warrant", "DEMO-WARRANT"), (6, "cjib-fines", "DEMO-FINE"))


def demo_scene(seed: int) -> Scene:
    """Eight cars, Dutch plates, both directions; several pairs (e.g. cars 3+4, 7+8) are in view together."""
    rng = np.random.default_rng(seed)
    bg = procedural_background(WIDTH, HEIGHT, seed=seed)
    # (start s, approaching, speed m/s)
    plan = [(0.3, True, 8.0), (2.6, False, 7.0), (5.0, True, 9.0), (6.0, False, 7.5),
            (9.0, True, 7.0), (11.2, False, 8.5), (13.3, True, 8.0), (14.3, False, 7.0)]
    vehicles = []
    for k, (start, approaching, speed) in enumerate(plan):
        lane = (-1.1 if approaching else 1.1) + float(rng.uniform(-0.15, 0.15))
        plate = render_plate(rng, "NL", layout="one_row")
        vehicles.append(Vehicle(plate=plate, start_s=start, lane_x=lane,
                                z_of_t=_drive(rng, approaching, speed, 6.0, 30.0),
                                body_bgr=BODY_COLOURS[k % len(BODY_COLOURS)], front=approaching,
                                yaw=float(rng.uniform(-0.08, 0.08))))
    duration = max(v.end_s for v in vehicles) + 0.6
    return Scene(width=WIDTH, height=HEIGHT, fps=FPS, duration_s=duration, background=bg, vehicles=vehicles,
                 blur_frames=set(), posts_x=[], noise=1.5)


def check_decodes(path: Path, frames: int) -> None:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        if img.shape != (HEIGHT, WIDTH, 3):
            raise RuntimeError(f"{path}: frame {n} has shape {img.shape}")
        n += 1
    cap.release()
    if n != frames:
        raise RuntimeError(f"{path}: decoded {n} frames, wrote {frames}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "demo")
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args(argv)
    scene = demo_scene(args.seed)
    video = args.out / "demo.mp4"
    gt = write_video(scene, video, seed=args.seed)
    video.with_suffix(".json").rename(args.out / "demo_truth.json")
    gt["source"] = "scripts/make_demo_video.py --seed %d (procedural scene, rendered plates: licence-clean)" % args.seed
    (args.out / "demo_truth.json").write_text(json.dumps(gt, indent=1))
    check_decodes(video, gt["frames"])
    size = video.stat().st_size
    if size > MAX_BYTES:
        raise RuntimeError(f"{video}: {size} bytes, over the {MAX_BYTES} limit")
    with open(args.out / "demo_list.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["plate", "list_id", "reason_code", "valid_until"])
        for i, list_id, reason in DEMO_LISTED:
            w.writerow([gt["vehicles"][i]["formatted"], list_id, reason, ""])
    listed = DEMO_LISTED
    print(f"{video}: {gt['frames']} frames, {len(gt['vehicles'])} cars, {size / 1e6:.2f} MB; "
          f"{len(listed)} plates in {args.out / 'demo_list.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
