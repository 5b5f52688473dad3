#!/usr/bin/env python3
"""End-to-end reads of turned plates: does the detector's corner handling change what is read?

Real val frames of ro_dashcam and openalpr_us_br; every labelled plate is painted over and a rendered
Dutch plate drawn at its place with its own proportions (at least 60 px wide), turned by +T or -T
degrees. Each frame goes through the served detector (verifier on) with three corner handlings: the
detector's own corners, the corner refiner on crops cut as they are, and the refiner with turned
plates cut level (the served default); each found plate (IoU >= 0.5, score >= 0.4) is rectified
from its corners and read by the recognizer. Printed: plates read exactly, per turn and handling.

    .venv/bin/python scripts/eval_turned_reads.py [--tilts 0 5 8 12] [--seed 99]
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

from detector_train.augment import warp_plate  # noqa: E402
from detector_train.sets import DATA, load_set  # noqa: E402
from eval_detector import hide_box, turn_quad  # noqa: E402
from platesynth import render_plate  # noqa: E402

from edge.corner_refiner import CornerRefiner  # noqa: E402
from edge.detector import PlateDetector  # noqa: E402
from edge.plate_verifier import PlateVerifier  # noqa: E402
from edge.recognizer import PlateRecognizer  # noqa: E402
from edge.types import box_iou  # noqa: E402

MODELS = ROOT / "models"


def turned_frames(tilt: float, seed: int) -> list[tuple[np.ndarray, list[tuple[tuple, str]]]]:
    """(frame, [(plate box, plate text)]) with every labelled plate replaced by a turned rendered one."""
    rng = np.random.default_rng(seed)
    out = []
    for s in (s for name in ("ro_dashcam", "openalpr_us_br") for s in load_set(name, DATA) if s.split == "val"):
        img = cv2.imread(str(s.image), cv2.IMREAD_COLOR)
        plates = []
        for b in s.boxes:
            p = render_plate(rng, country="NL")
            x1, y1, x2, y2 = map(float, b)
            ph, pw = p.image.shape[:2]
            w = max(x2 - x1, 60.0)
            h = w * ph / pw
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            q = np.float32([[cx - w / 2, cy - h / 2], [cx + w / 2, cy - h / 2], [cx + w / 2, cy + h / 2],
                            [cx - w / 2, cy + h / 2]])
            img = hide_box(img, b)
            if tilt:
                q = turn_quad(q, tilt if rng.random() < 0.5 else -tilt)
            img = warp_plate(img, np.ascontiguousarray(p.image), q, rng)
            plates.append(((q[:, 0].min(), q[:, 1].min(), q[:, 0].max(), q[:, 1].max()), p.text))
        out.append((img, plates))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tilts", type=float, nargs="+", default=[0.0, 5.0, 8.0, 12.0])
    ap.add_argument("--seed", type=int, default=99)
    args = ap.parse_args(argv)
    recognizer = PlateRecognizer(MODELS / "recognizer.onnx", threads=1)
    verifier = PlateVerifier(MODELS / "plate_verifier.onnx", threads=1)
    refiner = MODELS / "corner_refiner.onnx"
    handlings = {
        "detector's corners": PlateDetector(MODELS / "detector.onnx", threads=1, verifier=verifier),
        "refiner, cut as is": PlateDetector(MODELS / "detector.onnx", threads=1, verifier=verifier,
                                            refiner=CornerRefiner(refiner, level_degrees=float("inf"))),
        "refiner, turned cut level": PlateDetector(MODELS / "detector.onnx", threads=1, verifier=verifier,
                                                   refiner=CornerRefiner(refiner)),
    }
    for tilt in args.tilts:
        frames = turned_frames(tilt, args.seed)
        for name, det in handlings.items():
            right = total = 0
            for img, plates in frames:
                found = [d for d in det.detect(img) if d.score >= 0.4]
                for box, text in plates:
                    total += 1
                    best = max(found, key=lambda d: box_iou(d.box, box), default=None)
                    if best is not None and box_iou(best.box, box) >= 0.5:
                        right += recognizer.read(img, best.corners).text == text
            print(f"turned {tilt:4g} deg  {name:26s} read exactly {right}/{total} = {100 * right / max(total, 1):.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
