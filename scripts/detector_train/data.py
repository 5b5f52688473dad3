"""The training sample stream: real frames (some with their plates replaced by rendered Dutch
plates), synthetic scenes with pasted Dutch plates, text-only negatives. Deterministic per seed."""

from __future__ import annotations

import pickle
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from . import augment as A
from .model import MEAN, STD
from .sets import Cached, ROOT, draw_probabilities
from .encoding import make_targets

SET_WEIGHTS = {"uc3m": 0.42, "ro_dashcam": 0.33, "openalpr_us_br": 0.25}


def load_plate_bank(path: Path, n: int, seed: int, log=print) -> list[np.ndarray] | None:
    """Rendered Dutch (and some other EU) plates from scripts/platesynth, made once and cached.

    Returns None when the renderer is not importable yet, so training still runs on real data.
    """
    if path.exists():
        with open(path, "rb") as f:
            return pickle.load(f)
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from platesynth import render_plate  # owned by the recognizer engineer
    except Exception as exc:  # missing or broken renderer: real data only
        log(f"plate renderer not available ({type(exc).__name__}: {exc}); training without synthetic plates")
        return None
    rng = np.random.default_rng(seed + 7919)
    bank, t0 = [], time.time()
    for i in range(n):
        country = "NL" if rng.random() < 0.7 else None
        p = render_plate(rng, country=country)
        img = np.ascontiguousarray(p.image)
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        if img.shape[2] == 4:
            img = img[:, :, :3]
        if img.shape[1] > 240:
            k = 240 / img.shape[1]
            img = cv2.resize(img, (240, max(int(img.shape[0] * k), 8)), interpolation=cv2.INTER_AREA)
        bank.append(img)
    log(f"rendered {len(bank)} plates in {time.time() - t0:.0f} s")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(bank, f)
    return bank


class SampleStream:
    """Makes (image, quads, ignore) training crops and batches of tensors-ready arrays."""

    def __init__(self, cache: list[Cached], bank: list[np.ndarray] | None, size: int,
                 text_p: float = 0.3, badge_p: float = 0.0,
                 dont_care: dict[tuple[str, str], np.ndarray] | None = None,
                 frame_weights: dict[tuple[str, str], float] | None = None,
                 reg_per_plate: bool = False, max_rot: float = 6.0, rot_p: float = 0.4, closeup_p: float = 0.0):
        self.size = size
        self.max_rot, self.rot_p = max_rot, rot_p  # frame turn: up to max_rot degrees on a share rot_p of crops
        self.closeup_p = closeup_p  # share of real-frame crops with one plate scaled up to fill most of the crop
        self.reg_per_plate = reg_per_plate  # each plate weighs the same in the corner loss, whatever its size
        self.dont_care = dont_care or {}  # (set, file name) -> boxes the loss skips (plates the labels lack)
        self.text_p = text_p  # share of samples with painted non-plate text
        self.badge_p = badge_p  # share of those text items that are car badges
        self.bank = bank
        self.by_set = {s: [c for c in cache if c.set == s and c.split == "train"] for s in SET_WEIGHTS}
        self.all_train = [c for c in cache if c.split == "train"]
        # (set, file name) -> draw weight (hard frames more often); a set's share of the draws stays as it is
        self.draw_p = {s: draw_probabilities(f, frame_weights) for s, f in self.by_set.items()} if frame_weights else {}
        self.painter = A.TextPainter()

    def _real(self, rng):
        names = list(SET_WEIGHTS)
        s = names[rng.choice(len(names), p=np.array(list(SET_WEIGHTS.values())))]
        if s in self.draw_p:
            c = self.by_set[s][int(rng.choice(len(self.by_set[s]), p=self.draw_p[s]))]
        else:  # uniform, drawn exactly as before weights existed (earlier stages stay reproducible)
            c = self.by_set[s][int(rng.integers(len(self.by_set[s])))]
        img = c.decode()
        quads = A.box_quads(c.boxes)
        if self.bank is not None and len(quads) and rng.random() < 0.35:
            new = []
            for q, b in zip(quads, c.boxes):
                if rng.random() < 0.8 and (b[2] - b[0]) >= 12:
                    # widen thin boxes a little to the plate aspect of the rendered plate
                    plate = self.bank[int(rng.integers(len(self.bank)))]
                    nq = A.cover_quad(b, rng, 0.15)
                    img = A.warp_plate(img, plate, nq, rng)
                    new.append(nq)
                else:
                    new.append(q)
            quads = np.asarray(new, np.float32)
        return A.affine_crop(img, quads, rng, (self.size, self.size), ignore=self.dont_care.get((c.set, c.name)),
                             max_rot=self.max_rot, rot_p=self.rot_p, closeup_p=self.closeup_p)

    def _scene(self, rng):
        if rng.random() < 0.6:
            c = self.all_train[int(rng.integers(len(self.all_train)))]
            img, quads, ignore = A.affine_crop(c.decode(), A.box_quads(c.boxes), rng, (self.size, self.size), focus=0.0,
                                               ignore=self.dont_care.get((c.set, c.name)),
                                               max_rot=self.max_rot, rot_p=self.rot_p)
        else:
            img, quads, ignore = A.random_background(rng, (self.size, self.size)), np.zeros((0, 4, 2), np.float32), np.zeros((0, 4), np.float32)
        placed = [q for q in quads]
        boxes = [np.r_[q.min(0), q.max(0)] for q in quads] + list(ignore)
        for _ in range(int(rng.integers(1, 5))):
            plate = self.bank[int(rng.integers(len(self.bank)))]
            ph, pw = plate.shape[:2]
            w = float(np.exp(rng.uniform(np.log(14), np.log(self.size * 0.8))))
            h = w * ph / pw * rng.uniform(0.85, 1.15)
            if w >= self.size - 4 or h >= self.size - 4:
                continue
            x1, y1 = rng.uniform(2, self.size - w - 2), rng.uniform(2, self.size - h - 2)
            b = np.array([x1, y1, x1 + w, y1 + h], np.float32)
            if boxes and A._overlaps(np.asarray(boxes), b):
                continue
            q = A.jitter_quad(b, rng, 0.2 if rng.random() < 0.5 else 0.05)
            if rng.random() < 0.5:  # in-plane tilt
                ang = np.deg2rad(rng.uniform(-12, 12))
                c = q.mean(0)
                R = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]], np.float32)
                q = (q - c) @ R.T + c
                if q.min() < 0 or q[:, 0].max() >= self.size or q[:, 1].max() >= self.size:
                    continue
            img = A.warp_plate(img, plate, q, rng)
            placed.append(q)
            boxes.append(np.r_[q.min(0), q.max(0)])
        return img, np.asarray(placed, np.float32).reshape(-1, 4, 2), ignore

    def sample(self, rng):
        if self.bank is not None and rng.random() < 0.25:
            img, quads, ignore = self._scene(rng)
        else:
            img, quads, ignore = self._real(rng)
        if rng.random() < self.text_p:
            avoid = np.concatenate([np.c_[quads.min(1), quads.max(1)].reshape(-1, 4), ignore.reshape(-1, 4)])
            img = self.painter.paint(img, rng, avoid, int(rng.integers(1, 5)), self.badge_p)
        if rng.random() < 0.5:
            img, quads, ignore = A.hflip(img, quads, ignore)
        img = A.photometric(img, rng)
        return img, quads, ignore

    def batch(self, rng, n: int):
        xs, hs, hws, rs, rws = [], [], [], [], []
        for _ in range(n):
            img, quads, ignore = self.sample(rng)
            x = (img[:, :, ::-1].astype(np.float32) / 255 - MEAN) / STD
            xs.append(x.transpose(2, 0, 1))
            h, hw, r, rw = make_targets(quads, ignore, img.shape[:2], self.reg_per_plate)
            hs.append(h); hws.append(hw); rs.append(r); rws.append(rw)
        return [np.ascontiguousarray(np.stack(a)) for a in (xs, hs, hws, rs, rws)]
