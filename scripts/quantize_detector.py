#!/usr/bin/env python3
"""Int8 (QDQ, static) copy of the plate detector, calibrated on training frames only.

Why: the detector is most of a frame's cost (about 15 ms of 17 at 640x480 on one x86 core here);
int8 convolutions run about twice as fast on CPUs with int8 dot products (x86 VNNI, ARMv8.2 dot
product of the Pi 5's Cortex-A76). Calibration frames come from the training side of the real sets
(ro_dashcam and openalpr_us_br by the split rules of scripts/detector_train/sets.py), resized to
640x480 and letterboxed by the serving code itself, so no validation frame is seen. The model's
metadata is kept; its version gets an "-int8" suffix so hits and status say which one ran.

    .venv/bin/python scripts/quantize_detector.py --out /tmp/detector-int8.onnx
    .venv/bin/python scripts/eval_detector.py --model /tmp/detector-int8.onnx --score 0.4
    .venv/bin/python scripts/bench_detector.py --model /tmp/detector-int8.onnx
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

from detector_train.sets import load_set  # noqa: E402

from int8_quantize import quantize_qdq  # noqa: E402

from edge.detector import PlateDetector  # noqa: E402


def calibration_frames(per_set: int, seed: int) -> list[Path]:
    """Training-side frames of the real sets, an even random pick per set."""
    rng = np.random.default_rng(seed)
    out: list[Path] = []
    for name in ("ro_dashcam", "openalpr_us_br", "uc3m"):
        train = [s.image for s in load_set(name) if s.split == "train"]
        if not train:
            raise SystemExit(f"{name}: no training frames found (../shared/data missing?)")
        pick = rng.choice(len(train), size=min(per_set, len(train)), replace=False)
        out += [train[int(i)] for i in sorted(pick)]
    return out


def quantize(src: Path, dst: Path, frames: list[Path], size: tuple[int, int] = (640, 480)) -> None:
    from onnxruntime.quantization import CalibrationDataReader

    det = PlateDetector(src, threads=1)

    class Frames(CalibrationDataReader):
        def __init__(self):
            self.it = iter(frames)

        def get_next(self):
            for f in self.it:
                img = cv2.imread(str(f))
                if img is None:
                    continue
                x, _ = det.letterbox(cv2.resize(img, size, interpolation=cv2.INTER_AREA))
                return {det.input_name: x}
            return None

    quantize_qdq(src, dst, Frames(),
                 f"static QDQ int8, per-channel weights, {len(frames)} training frames at {size[0]}x{size[1]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "detector.onnx", help="float model to quantize")
    ap.add_argument("--out", type=Path, required=True, help="where to write the int8 model")
    ap.add_argument("--per-set", type=int, default=40, help="calibration frames per real set")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    frames = calibration_frames(args.per_set, args.seed)
    quantize(args.model, args.out, frames)
    det = PlateDetector(args.out, threads=1)
    print(f"{args.out}: version {det.version}, {len(frames)} calibration frames, "
          f"{args.out.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
