#!/usr/bin/env python3
"""Int8 (QDQ, static) copy of the plate recognizer, calibrated on training-side crops only.

Why: convolutions are about three quarters of the recognizer's time on one core, and int8
convolutions run faster on CPUs with int8 dot products (x86 VNNI, the Pi 5's Cortex-A76), which
buys margin on the 2 ms per crop target. The LSTM stays float (onnxruntime quantizes it only
dynamically). Calibration lines are made by the serving code itself (layout choice, row split,
contrast stretch) from rendered plates of a seed space the hold-out never uses and from the
training side of the real crop sets (uc3m `train`, openalpr_br texts with CRC32 % 5 != 0);
openalpr_eu2 is never seen. The model's metadata is kept; its version gets an "-int8" suffix.

    .venv/bin/python scripts/quantize_recognizer.py --out /tmp/recognizer-int8.onnx
    .venv/bin/python scripts/eval_recognizer.py --model /tmp/recognizer-int8.onnx --holdout 1000
    .venv/bin/python scripts/bench_recognizer.py --model /tmp/recognizer-int8.onnx
"""

from __future__ import annotations

import argparse
import csv
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

from int8_quantize import quantize_qdq  # noqa: E402

from edge.recognizer import PlateRecognizer  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
_CAL_SEED_SPACE = 31  # rendered calibration plates: rng [seed, 31, i]; the hold-out uses [seed, 2, i]


def _rows(name: str) -> list[dict]:
    path = DATA / "ocr" / name / "labels.csv"
    if not path.is_file():
        raise SystemExit(f"{path}: not found (../shared/data missing?)")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def calibration_crops(rendered: int, real_per_set: int, seed: int) -> list[np.ndarray]:
    """Rendered plates (half Dutch, 40 % two-row as the renderer draws them, training damage mix)
    and an even random pick of training-side real crops."""
    from platesynth import degrade, render_plate

    crops: list[np.ndarray] = []
    for i in range(rendered):
        rng = np.random.default_rng([seed, _CAL_SEED_SPACE, i])
        plate = render_plate(rng, "NL" if i % 2 == 0 else None, scale=float(rng.uniform(0.4, 0.65)))
        crops.append(degrade(rng, plate.image, plate.corners, strength=float(rng.uniform(0.3, 1.2))).image)
    rng = np.random.default_rng(seed)
    for name, keep in (("uc3m", lambda r: r["split"] == "train"),
                       ("openalpr_br", lambda r: zlib.crc32(r["text"].encode()) % 5 != 0)):
        rows = [r for r in _rows(name) if keep(r)]
        for j in sorted(rng.choice(len(rows), size=min(real_per_set, len(rows)), replace=False)):
            img = cv2.imread(str(DATA / "ocr" / name / rows[int(j)]["image"]))
            if img is not None:
                crops.append(img)
    return crops


def quantize(src: Path, dst: Path, crops: list[np.ndarray], batch: int = 32) -> None:
    from onnxruntime.quantization import CalibrationDataReader

    rec = PlateRecognizer(src, threads=1)
    x = rec.model_input([(crop, rec.layouts(crop)[0]) for crop in crops])  # each crop in its first layout

    class Lines(CalibrationDataReader):
        def __init__(self):
            self.it = iter(range(0, len(x), batch))

        def get_next(self):
            for i in self.it:
                return {rec.input_name: x[i: i + batch]}
            return None

    quantize_qdq(src, dst, Lines(), f"static QDQ int8 (Conv, MatMul; LSTM float), per-channel weights, "
                 f"{len(crops)} training-side crops", op_types=["Conv", "MatMul"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "recognizer.onnx", help="float model to quantize")
    ap.add_argument("--out", type=Path, required=True, help="where to write the int8 model")
    ap.add_argument("--rendered", type=int, default=600, help="rendered calibration plates")
    ap.add_argument("--real-per-set", type=int, default=200, help="calibration crops per real set (uc3m, openalpr_br)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    crops = calibration_crops(args.rendered, args.real_per_set, args.seed)
    quantize(args.model, args.out, crops)
    rec = PlateRecognizer(args.out, threads=1)
    print(f"{args.out}: version {rec.version}, {len(crops)} calibration crops, {args.out.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
