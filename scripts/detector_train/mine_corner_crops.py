#!/usr/bin/env python
"""Cut the corner refiner's training crops from the detector's own boxes on the training frames.

    .venv/bin/python scripts/detector_train/mine_corner_crops.py [--model models/detector.onnx]

The refiner (edge/corner_refiner.py) sees a detector box with its surroundings and says where the
plate's four corners are. Its truth must be exact, so most crops come from plates whose corners are
known: the training frames of the real sets with 80 % of their plates covered by rendered ones
(warped onto a perspective quad; 70 % Dutch), the same frames rescaled and photometrically damaged
(--damaged N times), and rendered stand-in scenes (--scenes). The real plates themselves, whose
labels are axis-aligned boxes, are kept as box-only crops: they teach where a real plate ends, not
its exact corners. Every detector box (score >= --score) with IoU >= 0.5 to a plate is a crop, and
--jitter more crops shift and scale that box by a few per cent, so the refiner does not learn one
detector's habits. Validation frames are never touched; scenes are split into the refiner's training
and development parts as for the verifier (scripts/detector_train/mine_verifier_crops.py).

Writes one .npz: crops, target corners and the detector's corners (TL TR BR BL, as fractions of the
cut region), whether the target is exact, the region's size and the plate's width in pixels, and per
crop its set, variant (0 real, 1 rendered plates, 2 damaged, 3 rendered scene) and development flag.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from detector_train.augment import TextPainter, photometric  # noqa: E402
from detector_train.mine_verifier_crops import (is_dev, rendered_scene, scene_key,  # noqa: E402
                                                synth_frame)
from detector_train.sets import DATA, ROOT, SETS, load_set  # noqa: E402
from edge.context_crop import context_crop  # noqa: E402
from edge.detector import PlateDetector  # noqa: E402
from eval_detector import iou  # noqa: E402

CROP_H, CROP_W = 48, 144
CONTEXT_X, CONTEXT_Y = 1.4, 2.0


def box_quad(b) -> np.ndarray:
    x1, y1, x2, y2 = (float(v) for v in b)
    return np.float32([[x1, y1], [x2, y1], [x2, y2], [x1, y2]])


def to_region(quad: np.ndarray, region) -> np.ndarray:
    """Corners in pixels -> fractions of the region (0..1 inside it), flattened TL TR BR BL (x, y)."""
    rx1, ry1, rx2, ry2 = region
    return ((np.asarray(quad, np.float32) - (rx1, ry1)) / (rx2 - rx1, ry2 - ry1)).reshape(-1)


def jittered(box, rng, amount: float = 0.06):
    """The box shifted and scaled by a few per cent of its size (another detector's error)."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    cx, cy = (x1 + x2) / 2 + rng.uniform(-amount, amount) * w, (y1 + y2) / 2 + rng.uniform(-amount, amount) * 1.5 * h
    w, h = w * rng.uniform(1 - 1.5 * amount, 1 + 1.5 * amount), h * rng.uniform(1 - 2 * amount, 1 + 2 * amount)
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def damaged(img, plates, quads, rng):
    """The frame scaled by 0.5-1.3 with the detector's photometric damage; boxes and corners scale too."""
    k = float(rng.uniform(0.5, 1.3))
    H, W = img.shape[:2]
    out = cv2.resize(img, (max(int(W * k), 16), max(int(H * k), 16)),
                     interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
    return (photometric(out, rng), [[v * k for v in b] for b in plates],
            [None if q is None else q * k for q in quads])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "detector.onnx")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--score", type=float, default=0.3, help="lowest detector score mined (the serving floor)")
    ap.add_argument("--dev-share", type=int, default=15, help="percent of scenes held out for development")
    ap.add_argument("--damaged", type=int, default=2, help="rescaled, damaged copies of each rendered-plate frame")
    ap.add_argument("--scenes", type=int, default=2000, help="rendered stand-in scenes (variant 3)")
    ap.add_argument("--jitter", type=int, default=2, help="extra crops per detector box, the box shifted and scaled")
    ap.add_argument("--dark-p", type=float, default=0.25, help="share of rendered plates that are dark old Dutch ones")
    ap.add_argument("--limit", type=int, default=0, help="at most this many frames per set (0 = all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "work_data" / "corners" / "crops.npz")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(ROOT / "scripts"))
    from platesynth import render_plate

    # the normal search only, as when the mined files of the model cards were made
    det = PlateDetector(args.model, threads=1, score_threshold=args.score, close_up_scale=0.0)
    painter = TextPainter()
    rng = np.random.default_rng(args.seed)
    crops, targets, dquads, rows = [], [], [], []

    def mine(frame, plates, quads, set_index, variant, dev):
        for d in det.detect(frame):
            ious = [iou(d.box, p) for p in plates]
            if not ious or max(ious) < 0.5:
                continue
            j = int(np.argmax(ious))
            exact = quads[j] is not None
            truth = quads[j] if exact else box_quad(plates[j])
            for n in range(args.jitter + 1):
                box = d.box if n == 0 else jittered(d.box, rng)
                crop, region = context_crop(frame, box, CROP_H, CROP_W, CONTEXT_X, CONTEXT_Y)
                crops.append(crop)
                targets.append(to_region(truth, region))
                dquads.append(to_region(np.asarray(d.corners), region) if n == 0 else np.full(8, np.nan, np.float32))
                rows.append((set_index, variant, dev, int(exact), region[2] - region[0], region[3] - region[1],
                             plates[j][2] - plates[j][0]))

    t0 = time.time()
    for si, name in enumerate(SETS):
        frames = [s for s in load_set(name, args.data) if s.split == "train"]
        if args.limit:
            frames = frames[: args.limit]
        for s in frames:
            img = cv2.imread(str(s.image), cv2.IMREAD_COLOR)
            if img is None:
                raise SystemExit(f"{s.image}: cannot read image")
            dev = int(is_dev(scene_key(name, s.image), args.dev_share))
            boxes = [list(map(float, b)) for b in s.boxes]
            mine(img, boxes, [None] * len(boxes), si, 0, dev)
            frame, plates, quads = synth_frame(img, s.boxes, rng, painter, render_plate, args.dark_p)
            mine(frame, plates, quads, si, 1, dev)
            for _ in range(args.damaged):
                mine(*damaged(frame, plates, quads, rng), si, 2, dev)
        print(f"{name}: {len(frames)} frames, {len(rows)} crops so far ({time.time() - t0:.0f} s)", flush=True)
    for i in range(args.scenes):
        frame, plates, quads = rendered_scene(rng, painter, render_plate, args.dark_p)
        mine(frame, plates, quads, len(SETS), 3, int(is_dev(f"scene/{i}", args.dev_share)))
    print(f"rendered scenes: {args.scenes}, {len(rows)} crops ({time.time() - t0:.0f} s)", flush=True)
    r = np.asarray(rows, np.float32)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, crops=np.stack(crops), target=np.stack(targets).astype(np.float32),
                        detector_quad=np.stack(dquads).astype(np.float32),
                        set=r[:, 0].astype(np.int8), variant=r[:, 1].astype(np.int8), dev=r[:, 2].astype(np.int8),
                        exact=r[:, 3].astype(np.int8), region_w=r[:, 4], region_h=r[:, 5], plate_w=r[:, 6],
                        sets=np.asarray(SETS + ("rendered",)), detector=np.asarray(det.version),
                        geometry=np.asarray([CROP_H, CROP_W, CONTEXT_X, CONTEXT_Y], np.float32))
    print(f"{len(rows)} crops: {int(r[:, 3].sum())} with exact corners, dev {int(r[:, 2].sum())}; written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
