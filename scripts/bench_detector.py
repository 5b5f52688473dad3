#!/usr/bin/env python
"""Latency of PlateDetector.detect on 640x480 frames with one onnxruntime thread.

    .venv/bin/python scripts/bench_detector.py [--model models/detector.onnx] [--runs 200]

Frames are real val frames from ro_dashcam resized to 640x480, so the number includes
letterboxing, the model, decoding and NMS, as the pipeline pays it. Target: median <= 15 ms.
Beside it: the end-to-end time of `anpr-edge read` per frame (detect, then rectify and read every
plate at or above the CLI's default score with models/recognizer.onnx), the same frames and thread count.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from detector_train.sets import ROOT, load_set  # noqa: E402
from edge.detector import CLOSE_UP_SCALE, PlateDetector  # noqa: E402
from edge.corner_refiner import CornerRefiner  # noqa: E402
from edge.plate_verifier import PlateVerifier  # noqa: E402
from edge.recognizer import DEFAULT_REREAD_BELOW, PlateRecognizer  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "detector.onnx")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--size", default="640x480", help="frame size WxH")
    ap.add_argument("--recognizer", type=Path, default=ROOT / "models" / "recognizer.onnx")
    ap.add_argument("--min-score", type=float, default=0.4, help="as `anpr-edge read --min-score`")
    ap.add_argument("--no-reread", action="store_true",
                    help="do not read doubtful plates again from padded and trimmed copies (the serving default does)")
    ap.add_argument("--verifier", type=Path, default=None,
                    help="plate verifier ONNX file (second look at doubtful boxes, as the unit's models.verifier)")
    ap.add_argument("--verify-below", type=float, default=0.7)
    ap.add_argument("--refiner", type=Path, default=None,
                    help="corner refiner ONNX file (every box's corners from a closer look, as models.corner_refiner)")
    ap.add_argument("--no-close-ups", action="store_true",
                    help="no second, smaller search of frames where no plate was found (detection.close_ups: false)")
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    verifier = PlateVerifier(args.verifier, threads=args.threads) if args.verifier else None
    refiner = CornerRefiner(args.refiner, threads=args.threads) if args.refiner else None
    det = PlateDetector(args.model, threads=args.threads, verifier=verifier, verify_below=args.verify_below,
                        refiner=refiner, close_up_scale=0.0 if args.no_close_ups else CLOSE_UP_SCALE)
    frames = [cv2.resize(cv2.imread(str(s.image)), (w, h)) for s in load_set("ro_dashcam") if s.split == "val"][:20]
    for f in frames[:5]:
        det.detect(f)
    times = []
    found: dict[int, list] = {}  # each frame's detections, for the close-up line below
    for i in range(args.runs):
        f = frames[i % len(frames)]
        t = time.perf_counter()
        found[i % len(frames)] = det.detect(f)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    print(f"model {args.model} (version {det.version}), {w}x{h}, intra-op threads {args.threads}, {args.runs} runs")
    if verifier:
        plain = PlateDetector(args.model, threads=args.threads)
        doubtful = sum(sum(1 for d in plain.detect(f) if d.score < args.verify_below) for f in frames) / len(frames)
        print(f"verifier {args.verifier} (version {verifier.version}): {doubtful:.2f} doubtful boxes per frame "
              f"(score {plain.score_threshold:g}-{args.verify_below:g}) looked at again")
    print(f"detect         median {statistics.median(times):.2f} ms  p90 {times[int(0.9 * len(times))]:.2f} ms  "
          f"min {times[0]:.2f} ms  max {times[-1]:.2f} ms")
    if det.close_up_scale:
        # a frame where nothing is found costs the normal search and the close-up search
        empty = np.full((h, w, 3), 120, np.uint8)
        bare = []
        for _ in range(max(args.runs // 2, 5)):
            t = time.perf_counter()
            det.detect(empty)
            bare.append((time.perf_counter() - t) * 1000)
        searched = sum(not any(d.score >= det.close_up_below for d in dets) for dets in found.values())
        print(f"close-up search on: {searched} of {len(found)} frames above found no plate scored >= "
              f"{det.close_up_below:g}; a frame without plates (grey) median {statistics.median(bare):.2f} ms")
    rec = PlateRecognizer(args.recognizer, threads=args.threads,
                          reread_below=0.0 if args.no_reread else DEFAULT_REREAD_BELOW)
    times, plates = [], 0
    for i in range(args.runs):
        f = frames[i % len(frames)]
        t = time.perf_counter()
        for d in det.detect(f):
            if d.score >= args.min_score:
                rec.read(f, d.corners)
                plates += 1
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    print(f"anpr-edge read median {statistics.median(times):.2f} ms  p90 {times[int(0.9 * len(times))]:.2f} ms  "
          f"per frame, {plates / args.runs:.2f} plates read per frame (recognizer {rec.version})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
