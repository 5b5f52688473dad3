#!/usr/bin/env python3
"""Train the plate recognizer (small CRNN + CTC) on rendered plates and real crops; export ONNX.

One reproducible command, resumable from its checkpoint (run it again to continue):

    nice -n 10 .venv/bin/python scripts/train_recognizer.py --steps 9000 --out runs/recognizer \
        --export models/recognizer.onnx

Batch k is drawn from numpy's generator seeded with (seed, k), so a resumed run sees the same data
as an uninterrupted one. Real crops: ../shared/data/ocr/uc3m (train split; '?' = privacy box, a
class of its own that serving suppresses) and ../shared/data/ocr/openalpr_br (texts whose CRC32 % 5
!= 0). ../shared/data/ocr/openalpr_eu2 is never used here: it is the real-data check.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

from edge.modelcontract import read_metadata  # noqa: E402
from edge.recognizer import line_image  # noqa: E402  (the serving preprocessing, shared)
from platesynth import degrade, render_plate  # noqa: E402

cv2.setNumThreads(1)  # one core per process: the unit under training shares 2 cores

CHARSET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ?"
BLANK = 0
HEIGHT, WIDTH = 32, 128
MEAN, STD = 0.5, 0.5
DATA = ROOT.parent / "shared" / "data"
SYNTH_COUNTRIES = ("NL", "DE", "BE", "FR", "ES", "IT", "PL", "CZ", "SK", "RO", "AT", "CH", "DK", "SE", "NO",
                   "GB", "GR", "BG", "LT", "LV", "HU", "PT", "IE", "FI", "SI", "EU")


class CRNN(nn.Module):
    """Conv feature extractor (32 x W -> 1 x W/4 columns) + BiLSTM + per-column classifier; every weight
    is independent of the input width W, so a model can be fine-tuned at another width."""

    def __init__(self, n_classes: int = len(CHARSET) + 1, hidden: int = 96):
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(1, 32), nn.MaxPool2d(2),              # 16 x 64
            *block(32, 48), nn.MaxPool2d(2),             # 8 x 32
            *block(48, 96), *block(96, 96), nn.MaxPool2d((2, 1)),   # 4 x 32
            *block(96, 128), nn.MaxPool2d((2, 1)),       # 2 x 32
        )
        self.proj = nn.Linear(128 * 2, 128)
        self.rnn = nn.LSTM(128, hidden, bidirectional=True, batch_first=True)
        self.head = nn.Linear(2 * hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # N x 1 x 32 x 128 -> N x 32 x C (logits)
        f = self.features(x)
        n, c, h, w = f.shape
        f = f.permute(0, 3, 1, 2).reshape(n, w, c * h)
        f = torch.relu(self.proj(f))
        f, _ = self.rnn(f)
        return self.head(f)


# ---------------------------------------------------------------------------------------------
# data

def _split_br(text: str) -> str:
    return "val" if zlib.crc32(text.encode()) % 5 == 0 else "train"


def load_real(split: str) -> list[tuple[np.ndarray, str, str]]:
    """Real crops of a split: (BGR image, label, layout) from uc3m and openalpr_br (never eu2)."""
    out = []
    root = DATA / "ocr" / "uc3m"
    with open(root / "labels.csv", newline="") as f:
        for r in csv.DictReader(f):
            if r["split"] == split and r["text"]:
                img = cv2.imread(str(root / r["image"]))
                # Below aspect 1.8 a uc3m box holds a two-row plate or a steeply angled one-row
                # plate; the label cannot tell which, so those crops are left out of training.
                if img is not None and img.shape[1] / img.shape[0] >= 1.8:
                    out.append((img, r["text"], "one_row"))
    root = DATA / "ocr" / "openalpr_br"
    with open(root / "labels.csv", newline="") as f:
        for r in csv.DictReader(f):
            if _split_br(r["text"]) == split and r["text"]:
                img = cv2.imread(str(root / r["image"]))
                if img is not None:
                    out.append((img, r["text"], "one_row"))
    return out


def encode(text: str) -> list[int]:
    return [CHARSET.index(c) + 1 for c in text]  # blank is class 0


def synth_sample(rng: np.random.Generator, nl_share: float = 0.5, emblem_p: float = 0.0,
                 furniture_p: float = 0.0, min_px: int = 50, width: int = WIDTH) -> tuple[np.ndarray, str]:
    country = "NL" if rng.random() < nl_share else str(rng.choice(SYNTH_COUNTRIES[1:]))
    plate = render_plate(rng, country, scale=float(rng.uniform(0.4, 0.65)), emblem_p=emblem_p,
                         furniture_p=furniture_p)
    # plate width in the frame: log-uniform min_px..200 px (degrade's own 50..200 draw when min_px is 50,
    # which keeps the default runs' random streams unchanged)
    plate_px = None if min_px == 50 else int(np.exp(rng.uniform(np.log(min_px), np.log(200))))
    crop = degrade(rng, plate.image, plate.corners, strength=float(rng.uniform(0.3, 1.2)), out_width=plate_px).image
    return line_image(crop, HEIGHT, width, plate.layout == "two_row"), plate.text


def real_sample(rng: np.random.Generator, real: list, width: int = WIDTH) -> tuple[np.ndarray, str]:
    img, text, layout = real[int(rng.integers(len(real)))]
    h, w = img.shape[:2]
    m = rng.uniform(-0.04, 0.06, 4) * np.array([w, h, w, h])
    x0, y0 = int(max(-m[0], 0)), int(max(-m[1], 0))
    x1, y1 = int(min(w + m[2], w)), int(min(h + m[3], h))
    crop = img[y0:max(y1, y0 + 4), x0:max(x1, x0 + 4)]
    if rng.random() < 0.6:
        crop = degrade(rng, crop, strength=0.4, mode="box",
                       out_width=int(np.clip(crop.shape[1] * rng.uniform(0.5, 1.2), 40, 220))).image
    return line_image(crop, HEIGHT, width, layout == "two_row"), text


def make_batch(seed: int, step: int, batch: int, real: list, real_share: float, emblem_p: float = 0.0,
               furniture_p: float = 0.0, min_px: int = 50, width: int = WIDTH):
    rng = np.random.default_rng([seed, step])
    imgs, labels = [], []
    for _ in range(batch):
        if real and rng.random() < real_share:
            im, t = real_sample(rng, real, width)
        else:
            im, t = synth_sample(rng, emblem_p=emblem_p, furniture_p=furniture_p, min_px=min_px, width=width)
        if rng.random() < 0.08:
            im = 255 - im  # some plates are light on dark; make sure both polarities are seen
        imgs.append(im)
        labels.append(t)
    x = (np.stack(imgs).astype(np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(x[:, None]), labels


class BatchStream(torch.utils.data.IterableDataset):
    """Batches start_step, start_step+1, ... drawn deterministically from (seed, step)."""

    def __init__(self, seed: int, start: int, stop: int, batch: int, real_share: float, emblem_p: float,
                 furniture_p: float = 0.0, min_px: int = 50, width: int = WIDTH):
        self.seed, self.start, self.stop, self.batch, self.real_share = seed, start, stop, batch, real_share
        self.emblem_p, self.furniture_p, self.min_px, self.width = emblem_p, furniture_p, min_px, width

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        n, k = (info.num_workers, info.id) if info else (1, 0)
        cv2.setNumThreads(1)
        real = load_real("train")
        for step in range(self.start + k, self.stop, n):
            x, labels = make_batch(self.seed, step, self.batch, real, self.real_share, self.emblem_p, self.furniture_p,
                                   self.min_px, self.width)
            yield step, x, labels


def holdout(n: int = 600, seed: int = 12345, width: int = WIDTH):
    """Fixed rendered hold-out (its own seed space, never a training step)."""
    imgs, texts = [], []
    for i in range(n):
        rng = np.random.default_rng([seed, 1, i])
        im, t = synth_sample(rng, width=width)
        imgs.append(im)
        texts.append(t)
    x = (np.stack(imgs).astype(np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(x[:, None]), texts


def greedy(logits: torch.Tensor) -> list[str]:
    out = []
    for path in logits.argmax(-1).tolist():
        s, prev = [], BLANK
        for k in path:
            if k != prev and k != BLANK:
                s.append(CHARSET[k - 1])
            prev = k
        out.append("".join(s))
    return out


# ---------------------------------------------------------------------------------------------
# export

def export_onnx(model: CRNN, path: Path, meta: dict[str, str]) -> None:
    """The model as ONNX with its metadata; the traced input has the metadata's input size."""
    import onnx

    model.eval()
    tmp = path.with_suffix(".tmp.onnx")
    dummy = torch.zeros(1, 1, int(meta["input_height"]), int(meta["input_width"]))
    torch.onnx.export(model, dummy, str(tmp), input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17,
                      dynamo=False)
    m = onnx.load(str(tmp))
    del m.metadata_props[:]
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = k, str(v)
    onnx.save(m, str(tmp))
    os.replace(tmp, path)


def model_metadata(step: int, args, params: int) -> dict[str, str]:
    return {
        "kind": "plate_recognizer",
        "version": f"crnn-ctc-{args.tag}-s{step}",
        "input_height": str(HEIGHT), "input_width": str(args.width), "input_channels": "1",
        "mean": str(MEAN), "std": str(STD),
        "charset": CHARSET, "blank_index": str(BLANK), "suppress": "?",
        "output": "logits N x T x C, softmax over C; class 0 = CTC blank, class i = charset[i-1]",
        "two_row": "split_halves: top half left of bottom half, one line (see edge.recognizer.line_image)",
        "two_row_max_aspect": "1.8", "one_row_min_aspect": "2.8",
        "parameters": str(params),
        "train_command": " ".join(["scripts/train_recognizer.py"] + sys.argv[1:]),
        "train_step": str(step),
    }


# ---------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "recognizer", help="checkpoint/log folder")
    ap.add_argument("--steps", type=int, default=9000, help="total optimiser steps (cosine schedule over these)")
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--real-share", type=float, default=0.2, help="share of real crops in a batch")
    ap.add_argument("--workers", type=int, default=1, help="data worker processes")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the optimiser")
    ap.add_argument("--ckpt-minutes", type=float, default=3.0)
    ap.add_argument("--export", type=Path, default=None, help="write ONNX here at every checkpoint and at the end")
    ap.add_argument("--export-only", action="store_true", help="export the checkpoint and stop")
    ap.add_argument("--tag", default="v1")
    ap.add_argument("--stop-at", type=int, default=None,
                    help="stop (with a checkpoint) after this step, keeping the schedule of --steps")
    ap.add_argument("--emblem-p", type=float, default=0.0, help="share of foreign plates with a crest/seal/sticker")
    ap.add_argument("--furniture-p", type=float, default=0.0,
                    help="share of AT/CH/IT/DE/NO plates with their own printed crests, province box, seals or flag")
    ap.add_argument("--min-px", type=int, default=50,
                    help="narrowest rendered plate in pixels (widths log-uniform up to 200); distant plates in video")
    ap.add_argument("--init", type=Path, default=None,
                    help="start from these weights (new optimiser and schedule): a fine-tuning stage; a .pt "
                         "checkpoint or an exported .onnx model such as models/recognizer.onnx")
    ap.add_argument("--width", type=int, default=WIDTH,
                    help="input line width in pixels (a multiple of 4; the model reads width/4 columns). "
                         "A wider line squeezes two-row plates less (their rows sit side by side)")
    args = ap.parse_args(argv)
    if args.width % 4 or not 64 <= args.width <= 512:
        ap.error(f"--width {args.width}: must be a multiple of 4 between 64 and 512")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    ckpt = args.out / "last.pt"
    model = CRNN()
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.05,
                                                anneal_strategy="cos", div_factor=10, final_div_factor=100)
    step = 0
    if args.init is not None and not ckpt.exists():
        if args.init.suffix == ".onnx":
            from onnx_init import load_onnx_weights, max_output_difference

            calib = BatchStream(args.seed + 1000, 0, 8, args.batch, args.real_share, args.emblem_p, args.furniture_p,
                                args.min_px, args.width)
            print(load_onnx_weights(model, args.init, [x for _, x, _ in calib]), flush=True)
            # the check runs the file at its own input width (batch norm statistics come from the new width)
            init_width = int(read_metadata(args.init).get("input_width", WIDTH))
            probe = next(iter(BatchStream(args.seed + 2000, 0, 1, 8, args.real_share, 0.0, 0.0,
                                          width=init_width)))[1]
            print(f"largest output difference to {args.init}: {max_output_difference(model, args.init, probe):.2e}",
                  flush=True)
        else:
            model.load_state_dict(torch.load(args.init, map_location="cpu", weights_only=False)["model"])
            print(f"initialised from {args.init}", flush=True)
    if ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        step = state["step"]
        print(f"resumed from {ckpt} at step {step}", flush=True)
    if args.export_only:
        if args.export is None:
            ap.error("--export-only needs --export PATH")
        export_onnx(model, args.export, model_metadata(step, args, params))
        print(f"exported step {step} to {args.export}")
        return 0

    print(f"parameters: {params}", flush=True)
    hx, htexts = holdout(width=args.width)
    ctc = nn.CTCLoss(blank=BLANK, zero_infinity=True)
    stop = min(args.steps, args.stop_at or args.steps)
    stream = BatchStream(args.seed, step, stop, args.batch, args.real_share, args.emblem_p, args.furniture_p,
                         args.min_px, args.width)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=args.workers,
                                         prefetch_factor=4 if args.workers else None,
                                         multiprocessing_context="spawn" if args.workers else None)

    def save(step: int) -> None:
        tmp = ckpt.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "step": step, "args": vars(args) | {"out": str(args.out), "export": str(args.export)}}, tmp)
        os.replace(tmp, ckpt)
        model.eval()
        with torch.no_grad():
            preds = greedy(torch.cat([model(hx[i:i + 200]) for i in range(0, len(hx), 200)]))
        acc = float(np.mean([p == t for p, t in zip(preds, htexts)]))
        model.train()
        line = {"step": step, "holdout_exact": round(acc, 4), "time": time.strftime("%H:%M:%S")}
        print(json.dumps(line), flush=True)
        with open(args.out / "history.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")
        if args.export:
            export_onnx(model, args.export, model_metadata(step, args, params))
            model.train()

    model.train()
    t_last, t0, seen, losses = time.time(), time.time(), 0, []
    for s, x, labels in loader:
        targets = torch.tensor([k for t in labels for k in encode(t)], dtype=torch.long)
        lengths = torch.tensor([len(t) for t in labels], dtype=torch.long)
        logits = model(x)  # N x T x C
        logp = logits.log_softmax(-1).permute(1, 0, 2)
        loss = ctc(logp, targets, torch.full((x.shape[0],), logp.shape[0], dtype=torch.long), lengths)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sched.step()
        step = s + 1
        seen += x.shape[0]
        losses.append(loss.item())
        if step % 25 == 0:
            el = time.time() - t0
            print(f"step {step} loss {np.mean(losses):.4f} lr {sched.get_last_lr()[0]:.2e} "
                  f"{seen / el:.1f} samples/s", flush=True)
            losses = []
        if time.time() - t_last > args.ckpt_minutes * 60:
            save(step)
            t_last = time.time()
    save(step)
    print(f"done at step {step}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
