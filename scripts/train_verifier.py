#!/usr/bin/env python
"""Train the plate verifier (plate / not plate on a detector box) and export models/plate_verifier.onnx.

    .venv/bin/python scripts/train_verifier.py [--run runs/verifier]     # same command resumes

Mines its training crops first when RUN/crops.npz is missing (scripts/detector_train/
mine_verifier_crops.py with the --mine-* options, from the shipped models/detector.onnx), so one
command rebuilds the model.

A CPU-sized CNN (about 70 k parameters) over a 32 x 96 colour crop of the box and its surroundings
(edge.plate_verifier.verifier_crop). Seeded and resumable (runs/verifier/last.pt every 250 steps).
Prints, on the held-out development scenes of the mined crops, how many false boxes the verifier
rejects and how many plates it keeps, per detector score band.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detector_train.augment import photometric  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MEAN, STD = 0.5, 0.25


class Verifier(nn.Module):
    def __init__(self, width: int = 16):
        super().__init__()
        w = width

        def block(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))

        self.features = nn.Sequential(
            block(3, w), nn.MaxPool2d(2),            # 16 x 48
            block(w, 2 * w), nn.MaxPool2d(2),        # 8 x 24
            block(2 * w, 3 * w), block(3 * w, 3 * w), nn.MaxPool2d(2),  # 4 x 12
            block(3 * w, 4 * w))
        self.head = nn.Linear(8 * w, 1)

    def forward(self, x):
        f = self.features(x)
        return self.head(torch.cat([f.mean((2, 3)), f.amax((2, 3))], 1))


def to_input(crops: np.ndarray) -> torch.Tensor:
    """BGR uint8 N x H x W x 3 -> normalised RGB N x 3 x H x W, as edge.plate_verifier.PlateVerifier.batch."""
    x = crops[..., ::-1].astype(np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(((x - MEAN) / STD).transpose(0, 3, 1, 2)))


def augment(crop: np.ndarray, rng, occlude_p: float = 0.0) -> np.ndarray:
    """A few per cent of shift and scale (box error), sometimes something in front (a pole, a car's
    edge: on plates and non-plates alike, so an occluder is no cue), then the detector's photometric damage."""
    h, w = crop.shape[:2]
    s = rng.uniform(0.9, 1.12)
    tx, ty = rng.uniform(-0.06, 0.06) * w, rng.uniform(-0.08, 0.08) * h
    M = np.float32([[s, 0, (1 - s) * w / 2 + tx], [0, s, (1 - s) * h / 2 + ty]])
    crop = cv2.warpAffine(crop, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if rng.random() < occlude_p:
        crop = crop.copy()
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.6:  # a pole or post across the plate
            bw = int(rng.uniform(0.04, 0.15) * w)
            x = int(rng.uniform(0.15, 0.85) * w)
            crop[:, max(x - bw // 2, 0):x + bw // 2 + 1] = colour
        else:  # a side or the bottom hidden by something nearer
            side = int(rng.integers(3))
            k = rng.uniform(0.2, 0.4)
            if side == 0:
                crop[:, : int(k * w)] = colour
            elif side == 1:
                crop[:, w - int(k * w):] = colour
            else:
                crop[h - int(k * h):] = colour
    return photometric(crop, rng)


def evaluate(model, crops, labels, scores) -> tuple[dict, np.ndarray]:
    """Per detector score band, plates kept and false boxes rejected at three verifier thresholds."""
    p = probabilities(model, crops)
    out = {}
    for lo, hi in ((0.15, 0.3), (0.3, 0.5), (0.5, 0.7), (0.7, 1.01)):
        m = (scores >= lo) & (scores < hi)
        pos, neg = m & (labels == 1), m & (labels == 0)
        out[f"{lo:.2f}-{hi:.2f}"] = {t: (int((p[pos] >= t).sum()), int(pos.sum()), int((p[neg] < t).sum()), int(neg.sum()))
                                     for t in (0.3, 0.5, 0.7)}
    return out, p


def probabilities(model, crops) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        p = torch.cat([torch.sigmoid(model(to_input(crops[i:i + 512]))).flatten()
                       for i in range(0, len(crops), 512)]).numpy()
    model.train()
    return p


def serving_rule(p, labels, scores, floor=0.3) -> list[str]:
    """The unit's rule on the development boxes: boxes from `floor` up, those under verify_below scored
    sqrt(score x p); plates kept and false boxes left at the pipeline's 0.4 and at 0.5, against no verifier."""
    lines = []
    m = scores >= floor
    pos, neg = m & (labels == 1), m & (labels == 0)
    for vb in (0.0, 0.7, 1.01):
        s = np.where(scores < vb, np.sqrt(scores * p), scores)
        name = "no verifier" if vb == 0 else f"verify_below {min(vb, 1.0):.1f}"
        lines.append(f"  {name:18s} " + "  ".join(
            f"score>={t}: plates {int((s[pos] >= t).sum())}/{int(pos.sum())}, false boxes {int((s[neg] >= t).sum())}"
            for t in (0.4, 0.5)))
    return lines


def resume(ckpt: Path, model, opt, sched) -> int:
    """Load a run's last checkpoint into model, optimiser and schedule; the step to go on from (0: none)."""
    if not ckpt.exists():
        return 0
    state = torch.load(ckpt, weights_only=False)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    print(f"resumed at step {state['step']}", flush=True)
    return int(state["step"])


def checkpoint(ckpt: Path, model, opt, sched, step: int) -> None:
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                "step": step}, ckpt)


def export(model, path: Path, meta: dict, output_name: str = "logit") -> None:
    model.eval()
    dummy = torch.zeros(1, 3, meta["input_height"], meta["input_width"])
    torch.onnx.export(model, dummy, str(path), input_names=["crops"], output_names=[output_name],
                      dynamic_axes={"crops": {0: "n"}, output_name: {0: "n"}}, opset_version=17, dynamo=False)
    m = onnx.load(str(path))
    for k, v in meta.items():
        e = m.metadata_props.add()
        e.key, e.value = k, str(v)
    onnx.save(m, str(path))
    model.train()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, default=ROOT / "runs" / "verifier")
    ap.add_argument("--crops", type=Path, default=None, help="mined crops (default RUN/crops.npz, mined when missing)")
    ap.add_argument("--mine-damaged", type=int, default=2, help="mining: rescaled, damaged copies per real frame")
    ap.add_argument("--mine-dark-p", type=float, default=0.25, help="mining: share of dark old Dutch rendered plates")
    ap.add_argument("--mine-scenes", type=int, default=3000, help="mining: rendered stand-in scenes")
    ap.add_argument("--mine-seed", type=int, default=1)
    ap.add_argument("--mine-rolled", type=int, default=0,
                    help="mining: turned copies per real frame (a rolled camera; pv-0.4 was mined without)")
    ap.add_argument("--mine-refiner", type=Path, default=None,
                    help="mining: crops cut from the corner refiner's boxes (for PlateDetector(refine_first=True))")
    ap.add_argument("--detector", type=Path, default=ROOT / "models" / "detector.onnx", help="mining: the detector")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--occlude-p", type=float, default=0.0, help="share of crops with a pole or a nearer object painted in front")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--version", default="pv-0.1")
    ap.add_argument("--export", type=Path, default=None, help="ONNX file to write (default RUN/plate_verifier.onnx)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    crops_file = args.crops or args.run / "crops.npz"
    if not crops_file.is_file():
        from detector_train import mine_verifier_crops

        print(f"{crops_file} missing: mining it with {args.detector}", flush=True)
        rc = mine_verifier_crops.main(["--model", str(args.detector), "--damaged", str(args.mine_damaged),
                                       "--dark-p", str(args.mine_dark_p), "--seed", str(args.mine_seed),
                                       "--scenes", str(args.mine_scenes), "--rolled", str(args.mine_rolled),
                                       *(["--refiner", str(args.mine_refiner)] if args.mine_refiner else []),
                                       "--out", str(crops_file)])
        if rc:
            return rc
    d = np.load(crops_file)
    crops, labels, scores, dev = d["crops"], d["label"].astype(np.int64), d["score"], d["dev"].astype(bool)
    h, w, cx, cy = (float(v) for v in d["geometry"])
    tr = np.nonzero(~dev)[0]
    print(f"{len(crops)} crops ({int(labels.sum())} plates), training on {len(tr)}, dev {int(dev.sum())}; "
          f"mined with detector {d['detector']}", flush=True)

    model = Verifier(args.width)
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
        x = to_input(np.stack([augment(crops[i], rng, args.occlude_p) for i in idx]))
        y = torch.from_numpy(labels[idx].astype(np.float32))
        loss = F.binary_cross_entropy_with_logits(model(x).flatten(), y)
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
    res, p = evaluate(model, crops[dev], labels[dev], scores[dev])
    print("dev scenes, per detector score band: plates kept / plates, false boxes rejected / false boxes")
    for band, r in res.items():
        print(f"  {band}: " + "  ".join(f"p>={t}: {a}/{b} kept, {c}/{e} rejected" for t, (a, b, c, e) in r.items()))
    variant = d["variant"][dev] if "variant" in d.files else d["synth"][dev]
    for title, m in (("all dev boxes", np.ones(len(p), bool)), ("real dev frames only", variant == 0)):
        print(f"dev scenes, the unit's rule ({title}):")
        print("\n".join(serving_rule(p[m], labels[dev][m], scores[dev][m])))
    out = args.export or args.run / "plate_verifier.onnx"
    cmd = "scripts/train_verifier.py " + " ".join(argv if argv is not None else sys.argv[1:])
    export(model, out, {
        "kind": "plate_verifier", "version": args.version, "input_height": int(h), "input_width": int(w),
        "input_channels": 3, "channel_order": "RGB", "mean": MEAN, "std": STD, "context_x": cx, "context_y": cy,
        "output": "logit (N x 1), P(plate) = sigmoid", "parameters": params, "train_step": step,
        "train_command": cmd.strip(), "mined_with": str(d["detector"]), "dev_figures": json.dumps(res)})
    print(f"{params} parameters; exported {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
