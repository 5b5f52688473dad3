#!/usr/bin/env python3
"""Latency of the plate recognizer on real crops: median and p90 per crop, one thread and all threads.

    .venv/bin/python scripts/bench_recognizer.py [--model models/recognizer.onnx] [--crops 300]

"read_crop" is the whole serving call (preprocessing, ONNX run(s), decoding, grammar); "model" is
the ONNX run alone. Crops in the ambiguous aspect band are run twice (one- and two-row), as served.
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

from edge.recognizer import PlateRecognizer  # noqa: E402

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


def bench(rec: PlateRecognizer, crops: list[np.ndarray], rounds: int) -> dict[str, float]:
    for c in crops[:20]:
        rec.read_crop(c)  # warm-up
    full, model = [], []
    for _ in range(rounds):
        for c in crops:
            t = time.perf_counter()
            rec.read_crop(c)
            full.append(time.perf_counter() - t)
            t = time.perf_counter()
            rec.probabilities(c, False)
            model.append(time.perf_counter() - t)
    ms = lambda xs, q: 1000 * float(np.percentile(xs, q))  # noqa: E731
    return {"read_median": ms(full, 50), "read_p90": ms(full, 90), "model_median": ms(model, 50),
            "model_p90": ms(model, 90)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "recognizer.onnx")
    ap.add_argument("--crops", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    crops = load_crops(args.crops)
    print(f"model {args.model} ({args.model.stat().st_size / 1e6:.2f} MB), {len(crops)} real crops x {args.rounds}, "
          f"cpu count {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}")
    for threads, label in ((1, "1 thread"), (0, "all threads")):
        rec = PlateRecognizer(args.model, threads=threads)
        r = bench(rec, crops, args.rounds)
        print(f"  {label:<12} read_crop median {r['read_median']:.2f} ms  p90 {r['read_p90']:.2f} ms   "
              f"model only median {r['model_median']:.2f} ms  p90 {r['model_p90']:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
