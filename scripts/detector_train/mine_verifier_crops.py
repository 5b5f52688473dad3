#!/usr/bin/env python
"""Cut the plate verifier's training crops from the detector's own boxes on the training frames.

    .venv/bin/python scripts/detector_train/mine_verifier_crops.py [--model models/detector.onnx]

Every box the detector gives at score >= --score on a training frame of the real sets is a crop:
a plate (IoU >= 0.5 with a labelled plate or with a checked unlabelled plate of
train_unlabelled_plates.json), not a plate (overlapping no plate at all), or left out (a part of a
plate, IoU under 0.5 but touching one: neither answer would be honest). Each frame is also used a
second time with its plates replaced by rendered ones (70 % Dutch) and text and car badges painted
around them, so the verifier learns yellow Dutch plates and the painted text negatives the detector
was trained against; with --damaged N it is used N more times rescaled and photometrically damaged,
for more of the detector's mistakes on real scenes. Validation frames are never touched. Frames are split into the verifier's own
training and development parts by scene (ro_dashcam by sequence), so its threshold is chosen on
scenes it was not trained on.

With --scenes N, N rendered stand-in scenes (the plain art of the demo and passage videos) are mined too.

Writes one .npz (crops, labels, and per crop its set, variant 0 real / 1 rendered plates / 2 damaged /
3 rendered scene,
development flag, detector score and box width) for scripts/train_verifier.py.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from detector_train.augment import (TextPainter, cover_quad, jitter_quad, photometric,  # noqa: E402
                                    random_background, warp_plate)
from detector_train.sets import DATA, ROOT, SETS, TRAIN_IGNORE, load_set  # noqa: E402
from edge.detector import PlateDetector  # noqa: E402
from edge.plate_verifier import verifier_crop  # noqa: E402
from eval_detector import iou, overlap_min, rolled  # noqa: E402

CROP_H, CROP_W = 32, 96
CONTEXT_X, CONTEXT_Y = 1.5, 2.0


def scene_key(set_name: str, image: Path) -> str:
    """Frames of one scene share a key (ro_dashcam frames of one drive: name up to `_t<frame>`)."""
    stem = image.stem
    if set_name == "ro_dashcam" and "_t" in stem:
        stem = stem.rsplit("_t", 1)[0]
    return f"{set_name}/{stem}"


def is_dev(key: str, share: int) -> bool:
    return int(hashlib.sha1(key.encode()).hexdigest(), 16) % 100 < share


def label_box(box, plates, unlabelled) -> int:
    """1 plate (a labelled one or a checked unlabelled one), 0 not a plate, -1 left out (a part of one)."""
    every = list(plates) + list(unlabelled)
    if any(iou(box, p) >= 0.5 for p in every):
        return 1
    if any(overlap_min(box, p) > 0.0 for p in every):
        return -1
    return 0


DARK_STYLES = ("nl_black", "nl_blue")


def rendered_plate(rng, render_plate, dark_p: float):
    """A rendered plate, 70 % Dutch; a share dark_p of them old Dutch dark plates (white characters on
    black or blue), which the renderer draws rarely but which look most like painted text negatives."""
    if rng.random() < dark_p:
        for _ in range(50):
            p = render_plate(rng, country="NL")
            if p.style in DARK_STYLES:
                return p
    return render_plate(rng, country="NL" if rng.random() < 0.7 else None)


def synth_frame(img, boxes, rng, painter, render_plate, dark_p: float = 0.0):
    """The frame with 80 % of its plates covered by rendered ones and 1-3 text items or badges painted;
    returns it, every plate's box and every plate's exact corners (None for a real plate left as it was)."""
    img = img.copy()
    plates, quads = [], []
    for b in boxes:
        if rng.random() < 0.8 and b[2] - b[0] >= 8:
            p = rendered_plate(rng, render_plate, dark_p)
            q = cover_quad(tuple(map(float, b)), rng, 0.15)
            img = warp_plate(img, np.ascontiguousarray(p.image), q, rng)
            plates.append([float(q[:, 0].min()), float(q[:, 1].min()), float(q[:, 0].max()), float(q[:, 1].max())])
            quads.append(q.astype(np.float32))
        else:
            plates.append(list(map(float, b)))
            quads.append(None)
    avoid = np.asarray(plates, np.float32).reshape(-1, 4)
    img = painter.paint(img, rng, avoid, int(rng.integers(1, 4)), badge_p=0.3)
    return img, plates, quads


def rendered_scene(rng, painter, render_plate, dark_p: float):
    """A 640 x 480 rendered stand-in scene (gradients, blobs, bars) with 1-3 rendered plates 40-200 px
    wide and 1-4 text items or badges: the plain art of the demo and passage videos, which the
    detector also trains on. Returns it, the plates' boxes and their exact corners."""
    img = random_background(rng, (480, 640))
    plates: list[list[float]] = []
    quads: list[np.ndarray] = []
    for _ in range(int(rng.integers(1, 4))):
        p = rendered_plate(rng, render_plate, dark_p)
        ph, pw = p.image.shape[:2]
        w = float(rng.uniform(40, 200))
        h = w * ph / pw
        x, y = float(rng.uniform(0, 640 - w)), float(rng.uniform(0, 480 - h))
        box = [x, y, x + w, y + h]
        if any(overlap_min(box, q) > 0 for q in plates):
            continue
        q = jitter_quad(box, rng, 0.12)
        img = warp_plate(img, np.ascontiguousarray(p.image), q, rng)
        plates.append([float(q[:, 0].min()), float(q[:, 1].min()), float(q[:, 0].max()), float(q[:, 1].max())])
        quads.append(q.astype(np.float32))
    avoid = np.asarray(plates, np.float32).reshape(-1, 4)
    img = painter.paint(img, rng, avoid, int(rng.integers(1, 5)), badge_p=0.3)
    return photometric(img, rng), plates, quads


def damaged_frame(img, k: float, rng):
    """The real frame scaled by k with the detector's photometric damage, so the detector's mistakes
    on it are new ones (boxes scale by k too)."""
    H, W = img.shape[:2]
    out = cv2.resize(img, (max(int(W * k), 16), max(int(H * k), 16)),
                     interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
    return photometric(out, rng)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "detector.onnx")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--score", type=float, default=0.15, help="lowest detector score mined")
    ap.add_argument("--dev-share", type=int, default=15, help="percent of scenes held out for choosing thresholds")
    ap.add_argument("--no-synth", action="store_true", help="real frames only")
    ap.add_argument("--dark-p", type=float, default=0.0, help="share of rendered plates that are dark old Dutch ones")
    ap.add_argument("--damaged", type=int, default=0,
                    help="also use each real frame this many times rescaled and damaged (more real false boxes)")
    ap.add_argument("--scenes", type=int, default=0, help="also this many rendered stand-in scenes (variant 3)")
    ap.add_argument("--rolled", type=int, default=0,
                    help="also use each real frame this many times turned (variant 4: a rolled camera, so the "
                         "verifier sees turned plates and the false boxes of turned scenes)")
    ap.add_argument("--roll-max", type=float, default=14.0, help="largest turn of --rolled frames, degrees")
    ap.add_argument("--refiner", type=Path, default=None,
                    help="corner refiner ONNX file: crops are cut from the boxes its corners span, as a unit "
                         "serving PlateDetector(refine_first=True) shows them to the verifier")
    ap.add_argument("--limit", type=int, default=0, help="at most this many frames per set (0 = all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "work_data" / "verifier" / "crops.npz")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(ROOT / "scripts"))
    from platesynth import render_plate

    refiner = None
    if args.refiner:
        from edge.corner_refiner import CornerRefiner

        refiner = CornerRefiner(args.refiner, threads=1)
    # the normal search only, as when the mined files of the model cards were made
    det = PlateDetector(args.model, threads=1, score_threshold=args.score, refiner=refiner, close_up_scale=0.0)
    ignore = json.loads(TRAIN_IGNORE.read_text())["sets"]
    painter = TextPainter()
    rng = np.random.default_rng(args.seed)
    crops, rows = [], []
    t0 = time.time()
    for name in SETS:
        frames = [s for s in load_set(name, args.data) if s.split == "train"]
        if args.limit:
            frames = frames[: args.limit]
        for s in frames:
            img = cv2.imread(str(s.image), cv2.IMREAD_COLOR)
            if img is None:
                raise SystemExit(f"{s.image}: cannot read image")
            dev = is_dev(scene_key(name, s.image), args.dev_share)
            others = ignore.get(name, {}).get(f"images/{s.image.name}", [])
            variants = [(0, img, [list(map(float, b)) for b in s.boxes], others)]
            if not args.no_synth:
                variants.append((1, *synth_frame(img, s.boxes, rng, painter, render_plate, args.dark_p)[:2], others))
            for _ in range(args.damaged):
                k = float(rng.uniform(0.6, 1.3))
                variants.append((2, damaged_frame(img, k, rng), [[float(v) * k for v in b] for b in s.boxes],
                                 [[float(v) * k for v in o] for o in others]))
            for _ in range(args.rolled):
                turned, gts, turned_others = rolled(img, s.boxes, others, float(rng.uniform(-1, 1)) * args.roll_max)
                variants.append((4, turned, [list(g[0]) for g in gts], turned_others))
            for kind, frame, plates, unlabelled in variants:
                for d in det.detect(frame):
                    lab = label_box(d.box, plates, unlabelled)
                    if lab < 0:
                        continue
                    crops.append(verifier_crop(frame, d.box, CROP_H, CROP_W, CONTEXT_X, CONTEXT_Y))
                    rows.append((SETS.index(name), kind, int(dev), lab, d.score, d.box[2] - d.box[0]))
        print(f"{name}: {len(frames)} frames, {len(rows)} crops so far ({time.time() - t0:.0f} s)", flush=True)
    for i in range(args.scenes):
        frame, plates, _ = rendered_scene(rng, painter, render_plate, args.dark_p)
        dev = is_dev(f"scene/{i}", args.dev_share)
        for d in det.detect(frame):
            lab = label_box(d.box, plates, [])
            if lab >= 0:
                crops.append(verifier_crop(frame, d.box, CROP_H, CROP_W, CONTEXT_X, CONTEXT_Y))
                rows.append((len(SETS), 3, int(dev), lab, d.score, d.box[2] - d.box[0]))
    if args.scenes:
        print(f"rendered scenes: {args.scenes}, {len(rows)} crops so far ({time.time() - t0:.0f} s)", flush=True)
    r = np.asarray(rows, np.float32)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, crops=np.stack(crops), set=r[:, 0].astype(np.int8), variant=r[:, 1].astype(np.int8),
                        dev=r[:, 2].astype(np.int8), label=r[:, 3].astype(np.int8), score=r[:, 4], width=r[:, 5],
                        sets=np.asarray(SETS + ("rendered",)), detector=np.asarray(det.version),
                        geometry=np.asarray([CROP_H, CROP_W, CONTEXT_X, CONTEXT_Y], np.float32))
    lab = r[:, 3]
    print(f"{len(rows)} crops: {int((lab == 1).sum())} plates, {int((lab == 0).sum())} not plates, "
          f"dev {int(r[:, 2].sum())}; written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
