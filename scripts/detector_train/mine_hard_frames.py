"""Hard training frames: where a detector still boxes something that is no plate, or misses a plate.

Runs a detector over the train frames of the three real detection sets and counts per frame the
false detections (score >= --score, overlapping no labelled box and no training don't-care region,
the same matching as find_unlabelled.py) and the missed labelled plates (at least --min-width px wide,
no detection at IoU >= 0.5). train_detector.py --hard-frames then draws those frames more often, so
the badges, lamps and grilles the model still takes for plates are seen more in training:

    nice -n 10 .venv/bin/python scripts/detector_train/mine_hard_frames.py \\
        --out scripts/detector_train/hard_frames_det-0.5.json

Only train frames are read; a val frame never enters the list.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from detector_train.find_unlabelled import is_unlabelled  # noqa: E402
from detector_train.sets import DATA, SETS, TRAIN_IGNORE, load_set  # noqa: E402
from edge.detector import PlateDetector  # noqa: E402
from eval_detector import iou, overlap_min  # noqa: E402


def count_errors(detections: list[tuple[list[float], float]], labels: list[list[float]],
                 dont_care: list[list[float]], min_width: float) -> tuple[int, int]:
    """(false, missed) of one frame: detections (box, score) against labelled boxes and don't-care boxes."""
    false = 0
    for box, _ in detections:
        if is_unlabelled(box, labels) and not any(overlap_min(box, g) >= 0.5 for g in dont_care):
            false += 1
    missed = sum(1 for g in labels
                 if g[2] - g[0] >= min_width and not any(iou(box, g) >= 0.5 for box, _ in detections))
    return false, missed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "detector.onnx")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--train-ignore", default=str(TRAIN_IGNORE), help="'' for none")
    ap.add_argument("--score", type=float, default=0.3)
    ap.add_argument("--min-width", type=float, default=20.0, help="labelled plates narrower than this are not counted as missed")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    # the normal search only, as when the mined files of the model cards were made
    det = PlateDetector(args.model, threads=1, score_threshold=args.score, close_up_scale=0.0)
    ignore = json.loads(Path(args.train_ignore).read_text())["sets"] if args.train_ignore else {}
    out: dict[str, dict[str, dict[str, int]]] = {}
    for name in SETS:
        frames = {}
        for s in load_set(name, args.data):
            if s.split != "train":
                continue
            image = f"images/{s.image.name}"
            found = [(d.box, d.score) for d in det.detect(cv2.imread(str(s.image)))]
            false, missed = count_errors(found, [list(map(float, b)) for b in s.boxes],
                                         ignore.get(name, {}).get(image, []), args.min_width)
            if false or missed:
                frames[image] = {"false": false, "missed": missed}
        out[name] = frames
        print(f"{name}: {len(frames)} hard frames, {sum(f['false'] for f in frames.values())} false boxes, "
              f"{sum(f['missed'] for f in frames.values())} missed plates")
    args.out.write_text(json.dumps({
        "about": f"Train frames where detector {det.version} ({args.model.name}, score >= {args.score}) boxed "
                 f"something that is no labelled plate and no don't-care region ('false'), or missed a "
                 f"labelled plate at least {args.min_width:g} px wide ('missed'). Made by "
                 "scripts/detector_train/mine_hard_frames.py; read by train_detector.py --hard-frames.",
        "sets": out}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
