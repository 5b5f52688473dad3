#!/usr/bin/env python
"""Train the plate detector on one CPU thread; resumable: run the same command again to continue.

    nice -n 10 .venv/bin/python scripts/train_detector.py            # full run (checkpoints in runs/detector/)
    .venv/bin/python scripts/train_detector.py --export-only          # write models/detector.onnx from the last checkpoint

Checkpoints (model, optimiser, step, both RNG states) are written every --ckpt-minutes, each with
an ONNX export next to it, so a usable model exists long before the run ends.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detector_train.data import SampleStream, load_plate_bank  # noqa: E402
from detector_train.model import MEAN, STD, STRIDE, ExportWrapper, PlateNet  # noqa: E402
from detector_train.sets import (CACHE_LONG_SIDE, ROOT, TRAIN_IGNORE, build_cache, load_hard_frames,  # noqa: E402
                                 load_train_ignore)
from detector_train.targets import detector_loss  # noqa: E402

VERSION = "det-0.2"


def export_onnx(net: PlateNet, path: Path, info: dict) -> None:
    """ONNX with dynamic H/W (multiples of 32, long side <= 416) and the metadata serving reads."""
    import onnx

    net = net.eval()
    tmp = path.with_suffix(".tmp.onnx")
    torch.onnx.export(ExportWrapper(net), torch.zeros(1, 3, 320, 416), str(tmp), input_names=["image"],
                      output_names=["heat", "reg"], opset_version=17, dynamo=False,
                      dynamic_axes={"image": {2: "height", 3: "width"}, "heat": {2: "h4", 3: "w4"}, "reg": {2: "h4", 3: "w4"}})
    m = onnx.load(str(tmp))
    meta = {
        "kind": "plate_detector", "version": info.get("version", VERSION),
        "input_height": str(CACHE_LONG_SIDE), "input_width": str(CACHE_LONG_SIDE), "input_channels": "3",
        "input_long_side": str(CACHE_LONG_SIDE), "input_multiple": "32", "pad_value": "114", "channel_order": "RGB",
        "mean": f"{MEAN},{MEAN},{MEAN}", "std": f"{STD},{STD},{STD}", "stride": str(STRIDE),
        "outputs": "heat: 1x1xH/4xW/4 plate-centre score, non-peaks zeroed by 3x3 max-pool; "
                   "reg: 1x12xH/4xW/4 = centre offset dx,dy (cells), log(w/stride), log(h/stride), "
                   "corners TL TR BR BL as (x-cx)/w,(y-cy)/h",
        "train_step": str(info.get("step", "")), "train_info": json.dumps(info, sort_keys=True),
    }
    del m.metadata_props[:]
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.save(m, str(tmp))
    tmp.replace(path)


def lr_at(step: int, total: int, base: float, warm: int = 200) -> float:
    if step < warm:
        return base * (step + 1) / warm
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm)))) + base * 0.01


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=ROOT / "runs" / "detector", help="checkpoint folder")
    ap.add_argument("--cache", type=Path, default=ROOT / "work_data" / "detector", help="resized-image cache folder")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=320, help="training crop side")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bank", type=int, default=1500, help="rendered plates to cache for pasting")
    ap.add_argument("--ckpt-minutes", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--export-only", action="store_true", help="export models/detector.onnx from the last checkpoint")
    ap.add_argument("--out", type=Path, default=ROOT / "models" / "detector.onnx")
    ap.add_argument("--init", type=Path, default=None,
                    help="when the run folder has no checkpoint, start from these weights (a fine-tuning run "
                         "with its own schedule): an exported .onnx such as models/detector.onnx, or a .ckpt")
    ap.add_argument("--text-p", type=float, default=0.3, help="share of samples with painted non-plate text")
    ap.add_argument("--badge-p", type=float, default=0.0,
                    help="share of the painted text items that are car badges (chrome words, ovals)")
    ap.add_argument("--version", default=VERSION, help="model version written into the ONNX metadata")
    ap.add_argument("--train-ignore", default=str(TRAIN_IGNORE),
                    help="don't-care regions of training frames (plates their labels lack, checked by eye); "
                         "'' for none, as stages det-0.1 to det-0.4 were trained")
    ap.add_argument("--hard-frames", default="",
                    help="per-frame error counts of a detector on the train frames "
                         "(scripts/detector_train/mine_hard_frames.py); those frames are drawn more often")
    ap.add_argument("--hard-weight", type=float, default=1.0,
                    help="a hard frame's draw weight is 1 + this x its errors (at most 3 counted)")
    ap.add_argument("--max-rot", type=float, default=6.0,
                    help="largest frame turn in degrees (a rolled camera); det-0.1 to det-0.6 used 6")
    ap.add_argument("--rot-p", type=float, default=0.4, help="share of training crops that are turned")
    ap.add_argument("--closeup-p", type=float, default=0.0,
                    help="share of real-frame crops that are close-ups: one plate scaled to 45-92%% of the crop "
                         "width, whole (det-0.1 to det-0.6: 0, so plates over half the crop were never seen whole)")
    ap.add_argument("--reg-per-plate", action="store_true",
                    help="every plate weighs the same in the box/corner loss (default: every centre cell, so "
                         "close-ups, which cover many cells, dominate and far plates get loose corners)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.run.mkdir(parents=True, exist_ok=True)
    ckpt_path = args.run / "last.ckpt"
    log_f = open(args.run / "train.log", "a")

    def log(msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        print(line, flush=True)
        log_f.write(line + "\n")
        log_f.flush()

    net = PlateNet()
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    rng = np.random.default_rng(args.seed)
    step = 0
    info: dict = {}
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        rng.bit_generator.state = ck["rng"]
        torch.set_rng_state(ck["torch_rng"])
        step = ck["step"]
        info = ck.get("info", {})
        log(f"resumed from {ckpt_path} at step {step}")
    if args.export_only:
        if not ckpt_path.exists():
            print(f"no checkpoint at {ckpt_path}", file=sys.stderr)
            return 2
        export_onnx(net, args.out, info)
        print(f"wrote {args.out} (step {step})")
        return 0

    cache = build_cache(args.cache / f"cache{416}.pkl")
    bank = load_plate_bank(args.cache / f"platebank_{args.bank}_s{args.seed}.pkl", args.bank, args.seed, log)
    dont_care = load_train_ignore(Path(args.train_ignore) if args.train_ignore else None, cache)
    hard = load_hard_frames(Path(args.hard_frames) if args.hard_frames else None, cache, args.hard_weight)
    stream = SampleStream(cache, bank, args.size, args.text_p, args.badge_p, dont_care, hard, args.reg_per_plate,
                          args.max_rot, args.rot_p, args.closeup_p)
    if args.init is not None and step == 0:
        if args.init.suffix == ".onnx":
            from onnx_init import load_onnx_weights, max_output_difference

            crng = np.random.default_rng(args.seed + 1000)
            calib = [torch.from_numpy(stream.batch(crng, args.batch)[0]) for _ in range(6)]
            log(load_onnx_weights(net, args.init, calib))
            log(f"largest output difference to {args.init}: "
                f"{max_output_difference(ExportWrapper(net), args.init, calib[0][:1]):.2e}")
        else:
            net.load_state_dict(torch.load(args.init, map_location="cpu", weights_only=False)["model"])
            log(f"initialised from {args.init}")
        info["init"] = str(args.init)
    n_params = sum(p.numel() for p in net.parameters())
    info.update(version=args.version, text_p=args.text_p, badge_p=args.badge_p, params=n_params,
                batch=args.batch, size=args.size, steps=args.steps, seed=args.seed,
                train_ignore_frames=len(dont_care), hard_frames=len(hard), hard_weight=args.hard_weight,
                max_rot=args.max_rot, rot_p=args.rot_p, closeup_p=args.closeup_p)
    info.setdefault("synthetic_from_step", None)
    if bank is not None and info["synthetic_from_step"] is None:
        info["synthetic_from_step"] = step
    log(f"params {n_params}, {len(cache)} cached frames, synthetic plates: {'yes' if bank is not None else 'no'}, "
        f"steps {step}->{args.steps}")

    def save() -> None:
        info["step"] = step
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save({"model": net.state_dict(), "opt": opt.state_dict(), "rng": rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state(), "step": step, "info": info}, tmp)
        tmp.replace(ckpt_path)
        export_onnx(net, args.run / "last.onnx", info)
        net.train()
        log(f"checkpoint step {step}")

    net.train()
    t_last, t0, agg, n_agg = time.time(), time.time(), np.zeros(3), 0
    while step < args.steps:
        x, h, hw, r, rw = (torch.from_numpy(a) for a in stream.batch(rng, args.batch))
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr)
        logit, reg = net(x)
        loss, lh, lr_ = detector_loss(logit, reg, h, hw, r, rw)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
        opt.step()
        step += 1
        agg += [loss.item(), lh.item(), lr_.item()]
        n_agg += 1
        if step % 50 == 0:
            a = agg / n_agg
            log(f"step {step} loss {a[0]:.3f} heat {a[1]:.3f} reg {a[2]:.3f} lr {lr_at(step, args.steps, args.lr):.2e} "
                f"{(time.time() - t0) / n_agg:.2f} s/step")
            agg[:], n_agg, t0 = 0, 0, time.time()
        if time.time() - t_last > args.ckpt_minutes * 60:
            save()
            t_last = time.time()
    save()
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
