#!/usr/bin/env python
"""Train the corner refiner (a plate's four corners from a detector box) and export models/corner_refiner.onnx.

    .venv/bin/python scripts/train_corner_refiner.py [--run runs/corners]     # same command resumes

Mines its training crops first when RUN/crops.npz is missing (scripts/detector_train/
mine_corner_crops.py with the --mine-* options, from the shipped models/detector.onnx), so one
command rebuilds the model.

A CPU-sized CNN over a 48 x 144 colour crop of the box and its surroundings
(edge.context_crop.context_crop); the flattened last feature map keeps where things are, and a small
head gives the corners TL TR BR BL as fractions of the cut region. Loss: smooth L1 of the corner
error in plate widths where the corners are exact (rendered plates); on real plates, whose labels are
boxes, only the box the corners span is asked for (weight --box-weight). Seeded and resumable
(RUN/last.pt every 250 steps). Prints, on the held-out development scenes, the mean corner error in
plate widths of the detector's corners and of the refined ones, and the box fit on real plates.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detector_train.augment import photometric  # noqa: E402
from train_verifier import checkpoint, export, resume, to_input  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MEAN, STD = 0.5, 0.25
FLIP = [2, 3, 0, 1, 6, 7, 4, 5]  # mirrored left-right: TL <-> TR, BR <-> BL (x, y pairs)


class Refiner(nn.Module):
    def __init__(self, width: int = 16, height: int = 48, cols: int = 144):
        super().__init__()
        w = width

        def block(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))

        self.features = nn.Sequential(
            block(3, w), nn.MaxPool2d(2),                                 # 24 x 72
            block(w, 2 * w), nn.MaxPool2d(2),                             # 12 x 36
            block(2 * w, 3 * w), block(3 * w, 3 * w), nn.MaxPool2d(2),    # 6 x 18
            block(3 * w, 4 * w), block(4 * w, 4 * w), nn.MaxPool2d(2))    # 3 x 9
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * w * (height // 16) * (cols // 16), 128),
                                  nn.ReLU(inplace=True), nn.Linear(128, 8))

    def forward(self, x):
        return self.head(self.features(x))


def rotate(crop: np.ndarray, target: np.ndarray, region_wh, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """The crop's content and its target corners turned by `degrees` about the crop centre, in the
    frame's own proportions (the crop squeezes the region anisotropically): a plate tilted in the
    image (camera roll, a sloping road), which the rendered quads alone rarely show."""
    H, W = crop.shape[:2]
    sx, sy = W / float(region_wh[0]), H / float(region_wh[1])
    t = np.deg2rad(degrees)
    R = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    A = np.diag([sx, sy]) @ R @ np.diag([1 / sx, 1 / sy])
    c = np.array([W / 2, H / 2])
    M = np.hstack([A, (c - A @ c)[:, None]]).astype(np.float32)
    out = cv2.warpAffine(crop, M, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    pts = target.reshape(4, 2) * (W, H)
    pts = pts @ A.T + (c - A @ c)
    return out, (pts / (W, H)).reshape(-1).astype(np.float32)


def corner_error(pred: np.ndarray, target: np.ndarray, region_wh: np.ndarray, plate_w: np.ndarray) -> np.ndarray:
    """Mean distance of the four corners, in plate widths, per crop (as scripts/eval_detector.py)."""
    d = (pred - target).reshape(-1, 4, 2) * region_wh[:, None, :]
    return np.linalg.norm(d, axis=2).mean(1) / plate_w


def spanned_box(q):
    """x1 y1 x2 y2 spanned by flattened corners TL TR BR BL (torch or numpy)."""
    mn, mx = (torch.minimum, torch.maximum) if isinstance(q, torch.Tensor) else (np.minimum, np.maximum)
    return [mn(q[:, 0], q[:, 6]), mn(q[:, 1], q[:, 3]), mx(q[:, 2], q[:, 4]), mx(q[:, 5], q[:, 7])]


def box_fit(pred, target, region_wh, plate_w) -> np.ndarray:
    """Mean distance of the spanned box's corners to the labelled box's, in plate widths."""
    p, t = np.stack(spanned_box(pred), 1), np.stack(spanned_box(target), 1)
    bq = lambda b: np.stack([b[:, 0], b[:, 1], b[:, 2], b[:, 1], b[:, 2], b[:, 3], b[:, 0], b[:, 3]], 1)  # noqa: E731
    return corner_error(bq(p), bq(t), region_wh, plate_w)


def predict(model, crops) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        out = torch.cat([model(to_input(crops[i:i + 512])) for i in range(0, len(crops), 512)]).numpy()
    model.train()
    return out


def dev_report(pred, d, dev) -> dict:
    """Development figures: corner error (exact corners) and box fit (real plates), detector vs refined."""
    first = dev & ~np.isnan(d["detector_quad"][:, 0])  # the detector's own boxes, not the jittered copies
    wh = np.stack([d["region_w"], d["region_h"]], 1)
    exact = d["exact"].astype(bool)
    out = {}
    names = list(d["sets"])
    for title, m in (("exact corners, all", first & exact),
                     ("exact corners, real frames", first & exact & (d["variant"] < 3))):
        i = np.nonzero(m)[0]
        out[title] = {"crops": int(m.sum()),
                      "detector": float(corner_error(d["detector_quad"][i], d["target"][i], wh[i], d["plate_w"][i]).mean()),
                      "refined": float(corner_error(pred[i], d["target"][i], wh[i], d["plate_w"][i]).mean())}
    for si, name in enumerate(names[:-1]):
        i = np.nonzero(first & ~exact & (d["set"] == si))[0]
        if len(i):
            out[f"box fit, real {name}"] = {
                "crops": len(i), "detector": float(box_fit(d["detector_quad"][i], d["target"][i], wh[i], d["plate_w"][i]).mean()),
                "refined": float(box_fit(pred[i], d["target"][i], wh[i], d["plate_w"][i]).mean())}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, default=ROOT / "runs" / "corners")
    ap.add_argument("--crops", type=Path, default=None, help="mined crops (default RUN/crops.npz, mined when missing)")
    ap.add_argument("--mine-damaged", type=int, default=2)
    ap.add_argument("--mine-scenes", type=int, default=2000)
    ap.add_argument("--mine-jitter", type=int, default=2)
    ap.add_argument("--mine-seed", type=int, default=1)
    ap.add_argument("--detector", type=Path, default=ROOT / "models" / "detector.onnx", help="mining: the detector")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=96)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--box-weight", type=float, default=0.25, help="weight of the box-only loss on real plates")
    ap.add_argument("--rotate", type=float, default=0.0, help="turn crops by up to this many degrees (tilted plates)")
    ap.add_argument("--rotate-p", type=float, default=0.5, help="share of crops turned (with --rotate)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--version", default="cr-0.1")
    ap.add_argument("--export", type=Path, default=None, help="ONNX file to write (default RUN/corner_refiner.onnx)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    crops_file = args.crops or args.run / "crops.npz"
    if not crops_file.is_file():
        from detector_train import mine_corner_crops

        print(f"{crops_file} missing: mining it with {args.detector}", flush=True)
        rc = mine_corner_crops.main(["--model", str(args.detector), "--damaged", str(args.mine_damaged),
                                     "--scenes", str(args.mine_scenes), "--jitter", str(args.mine_jitter),
                                     "--seed", str(args.mine_seed), "--out", str(crops_file)])
        if rc:
            return rc
    d = dict(np.load(crops_file))
    crops, target, dev = d["crops"], d["target"], d["dev"].astype(bool)
    exact = d["exact"].astype(np.float32)
    region_wh = np.stack([d["region_w"], d["region_h"]], 1)
    scale = np.tile(region_wh, 4) / d["plate_w"][:, None]
    h, w, cx, cy = (float(v) for v in d["geometry"])
    tr = np.nonzero(~dev)[0]
    print(f"{len(crops)} crops ({int(exact.sum())} exact), training on {len(tr)}, dev {int(dev.sum())}; "
          f"mined with detector {d['detector']}", flush=True)

    model = Refiner(args.width, int(h), int(w))
    with torch.no_grad():  # start from the box itself: its corners sit at the middle of the context
        ux, uy = 0.5 / cx, 0.5 / cy
        model.head[-1].bias.copy_(torch.tensor([0.5 - ux, 0.5 - uy, 0.5 + ux, 0.5 - uy,
                                                0.5 + ux, 0.5 + uy, 0.5 - ux, 0.5 + uy]))
        model.head[-1].weight.mul_(0.1)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    args.run.mkdir(parents=True, exist_ok=True)
    ckpt = args.run / "last.pt"
    step = resume(ckpt, model, opt, sched)
    t0, run_loss = time.time(), []
    while step < args.steps:
        rng = np.random.default_rng((args.seed, step))
        idx = rng.choice(tr, args.batch)
        flip = rng.random(args.batch) < 0.5
        xs, ys = [], []
        for i, f in zip(idx, flip):
            c, t = crops[i], target[i].copy()
            if f:
                c, t = c[:, ::-1], t[FLIP]
                t[0::2] = 1.0 - t[0::2]
            if args.rotate > 0 and rng.random() < args.rotate_p:
                c, t = rotate(np.ascontiguousarray(c), t, region_wh[i], rng.uniform(-args.rotate, args.rotate))
            xs.append(photometric(np.ascontiguousarray(c), rng))
            ys.append(t)
        x = to_input(np.stack(xs))
        y = torch.from_numpy(np.stack(ys))
        s = torch.from_numpy(scale[idx].astype(np.float32))
        ex = torch.from_numpy(exact[idx])
        pred = model(x)
        corner = F.smooth_l1_loss(pred * s, y * s, reduction="none", beta=0.02).mean(1)
        pb, tb = torch.stack(spanned_box(pred), 1), torch.stack(spanned_box(y), 1)
        sb = s[:, [0, 1, 0, 1]]
        boxl = F.smooth_l1_loss(pb * sb, tb * sb, reduction="none", beta=0.02).mean(1)
        loss = (ex * corner + args.box_weight * (1 - ex) * boxl).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        run_loss.append(loss.item())
        if step % 250 == 0 or step == args.steps:
            print(f"step {step} loss {np.mean(run_loss):.4f} ({time.time() - t0:.0f} s)", flush=True)
            run_loss = []
            checkpoint(ckpt, model, opt, sched, step)
    res = dev_report(predict(model, crops[dev]), {k: (v[dev] if v.ndim and len(v) == len(crops) else v)
                                                   for k, v in d.items()}, np.ones(int(dev.sum()), bool))
    print("dev scenes, the detector's own boxes: mean error in plate widths (detector -> refined)")
    for k, r in res.items():
        print(f"  {k:32s} {r['crops']:6d} crops  {r['detector']:.4f} -> {r['refined']:.4f}")
    out = args.export or args.run / "corner_refiner.onnx"
    cmd = "scripts/train_corner_refiner.py " + " ".join(argv if argv is not None else sys.argv[1:])
    export(model, out, {
        "kind": "corner_refiner", "version": args.version, "input_height": int(h), "input_width": int(w),
        "input_channels": 3, "channel_order": "RGB", "mean": MEAN, "std": STD, "context_x": cx, "context_y": cy,
        "output": "corners (N x 8): TL TR BR BL x, y as fractions of the cut region", "parameters": params,
        "train_step": step, "train_command": cmd.strip(), "mined_with": str(d["detector"]),
        "dev_figures": json.dumps(res)}, output_name="corners")
    print(f"{params} parameters; exported {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
