#!/usr/bin/env python3
"""Latency of the plate recognizer on real crops: median and p90 per crop, one thread and all threads.

    .venv/bin/python scripts/bench_recognizer.py [--model models/recognizer.onnx] [--crops 300]

"read" is the serving call from detector corners (rectify, preprocessing, ONNX run, decoding,
grammar) on rendered plates; "read_crop" the call on real box crops, where ambiguous shapes are
read both ways (two ONNX runs); "model" the ONNX run alone.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.recognizer import DEFAULT_REREAD_BELOW, PlateRecognizer  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def load_crops(n: int) -> list[np.ndarray]:
    crops = []
    for name in ("openalpr_eu2", "uc3m", "openalpr_br"):
        root = DATA / "ocr" / name
        with open(root / "labels.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        for r in rows[: n // 3 + 1]:
            img = cv2.imread(str(root / r["image"]))
            if img is not None:
                crops.append(img)
    return crops[:n]


def load_scenes(n: int) -> list[tuple[np.ndarray, tuple]]:
    """Rendered plates (80% one-row) seen at an angle in a larger image, with their corners."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from platesynth import degrade, render_plate

    rng = np.random.default_rng(7)
    scenes = []
    for i in range(n):
        p = render_plate(rng, "NL" if i % 2 else None, layout="two_row" if i % 5 == 0 else "one_row", scale=0.5)
        d = degrade(rng, p.image, p.corners, mode="box", out_width=int(rng.integers(60, 200)))
        scenes.append((d.image, d.corners))
    return scenes


def bench(rec: PlateRecognizer, crops: list[np.ndarray], scenes: list, rounds: int) -> dict[str, float]:
    for c in crops[:20]:
        rec.read_crop(c)  # warm-up
    crop_t, scene_t, model = [], [], []
    for _ in range(rounds):
        for c in crops:
            t = time.perf_counter()
            rec.read_crop(c)
            crop_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            rec.probabilities(c, False)
            model.append(time.perf_counter() - t)
        for img, corners in scenes:
            t = time.perf_counter()
            rec.read(img, corners)
            scene_t.append(time.perf_counter() - t)
    ms = lambda xs, q: 1000 * float(np.percentile(xs, q))  # noqa: E731
    return {"read": (ms(scene_t, 50), ms(scene_t, 90)), "read_crop": (ms(crop_t, 50), ms(crop_t, 90)),
            "model": (ms(model, 50), ms(model, 90))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "recognizer.onnx")
    ap.add_argument("--crops", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-reread", action="store_true",
                    help="do not read doubtful crops again from padded and trimmed copies (the serving default does)")
    args = ap.parse_args(argv)
    crops = load_crops(args.crops)
    scenes = load_scenes(args.crops)
    print(f"model {args.model} ({args.model.stat().st_size / 1e6:.2f} MB); {len(crops)} real box crops and "
          f"{len(scenes)} rendered plates with corners, x {args.rounds}; cpu count {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.2f}")
    print("  read = rectify + read from detector corners; read_crop = real box crops (ambiguous shapes read "
          "twice); model = one ONNX run")
    for threads, label in ((1, "1 thread"), (0, "all threads")):
        rec = PlateRecognizer(args.model, threads=threads, reread_below=0.0 if args.no_reread else DEFAULT_REREAD_BELOW)
        r = bench(rec, crops, scenes, args.rounds)
        print(f"  {label:<12}" + "   ".join(f"{k} median {a:.2f} ms p90 {b:.2f} ms" for k, (a, b) in r.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
