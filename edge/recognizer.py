"""Plate recognizer serving: rectify a plate from its four corners and read it with a CTC model.

The ONNX model's metadata says everything serving needs (input size, normalisation, charset,
blank index, two-row handling), so this file holds no model constants. Two-row plates are read by
placing the top half left of the bottom half and reading the result as one line. The Dutch
grammar settles look-alikes (0/O, 8/B, ...) only where the read is plausibly Dutch.
Plate texts never go into logs or exception messages here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from edge.grammar import LOOKALIKE_GROUPS, format_plate, guess_country, is_valid_nl, nl_constrained_read
from edge.marks import paint_out_marks
from edge.modelcontract import ModelContract, ModelContractError, make_session
from edge.types import PlateRead


_MAX_RECT_WIDTH = 400
_LOOKALIKE_PAIRS = {frozenset((a, b)) for g in LOOKALIKE_GROUPS for a in g for b in g if a != b}


def rectify(image: np.ndarray, corners, max_width: int = _MAX_RECT_WIDTH) -> np.ndarray:
    """Warp the quadrilateral `corners` (TL, TR, BR, BL) of `image` to an upright crop of its own size."""
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.size == 0:
        raise ValueError("rectify: image must be a non-empty H x W (x 3) array")
    pts = np.asarray(corners, dtype=np.float32)
    if pts.shape != (4, 2) or not np.isfinite(pts).all():
        raise ValueError(f"rectify: corners must be 4 finite (x, y) points (TL, TR, BR, BL), got shape {pts.shape}")
    w = max(np.linalg.norm(pts[1] - pts[0]), np.linalg.norm(pts[2] - pts[3]))
    h = max(np.linalg.norm(pts[3] - pts[0]), np.linalg.norm(pts[2] - pts[1]))
    if w < 2 or h < 2:
        raise ValueError(f"rectify: corners span {w:.1f} x {h:.1f} px, too small to read")
    k = min(1.0, max_width / w)
    ow, oh = max(int(round(w * k)), 2), max(int(round(h * k)), 2)
    dst = np.array([[0, 0], [ow - 1, 0], [ow - 1, oh - 1], [0, oh - 1]], np.float32)
    M = cv2.getPerspectiveTransform(pts, dst)
    return cv2.warpPerspective(image, M, (ow, oh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    shrink = img.shape[1] > w or img.shape[0] > h
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _row_split(grey: np.ndarray) -> int:
    """Row between the two text lines: least horizontal edge energy in the middle of the plate."""
    h = grey.shape[0]
    lo, hi = int(h * 0.38), int(math.ceil(h * 0.62))
    if hi - lo < 2:
        return h // 2
    band = grey[lo:hi].astype(np.float32)
    energy = np.abs(np.diff(band, axis=1)).sum(axis=1)
    energy = np.convolve(energy, np.ones(3, np.float32) / 3, mode="same")
    return lo + int(np.argmin(energy))


def line_image(crop: np.ndarray, height: int, width: int, two_row: bool, split: int | None = None) -> np.ndarray:
    """The model's grey input line (uint8 height x width): two-row plates as top half | bottom half
    (split between the rows at `split`, found from the crop when not given)."""
    if crop.ndim == 3:
        grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    else:
        grey = crop
    if grey.shape[0] < 2 or grey.shape[1] < 2:
        raise ValueError(f"plate crop of {grey.shape[1]} x {grey.shape[0]} px is too small to read")
    if not two_row:
        line = _resize(grey, width, height)
    else:
        s = _row_split(grey) if split is None else split
        pad = max(int(grey.shape[0] * 0.03), 1)
        top, bottom = grey[: s + pad], grey[max(s - pad, 0):]
        half = width // 2
        line = np.hstack([_resize(top, half, height), _resize(bottom, width - half, height)])
    return _stretch(line)


def _stretch(line: np.ndarray) -> np.ndarray:
    """Stretch contrast to the full range: night and glare crops use a small part of it."""
    hist = np.bincount(line.ravel(), minlength=256).cumsum()
    n = hist[-1]
    lo, hi = int(np.searchsorted(hist, 0.02 * n)), int(np.searchsorted(hist, 0.98 * n))
    if hi - lo <= 8:
        return line
    lut = np.clip((np.arange(256, dtype=np.float32) - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)
    return lut[line]


@dataclass(frozen=True)
class _Decoded:
    text: str
    char_probs: tuple[float, ...]
    position_probs: np.ndarray  # L x C (non-blank classes, renormalised)
    gap_risk: float  # highest non-blank probability between emitted characters (a missed character)
    spans: tuple[tuple[int, int], ...] = ()  # first and last time step of each character
    steps: int = 0  # time steps of the model's output (across the width of its input line)


_OTHER_LAYOUT_FACTOR = 0.9  # prior for the layout the crop's aspect ratio does not suggest


def _layout_score(read: PlateRead) -> float:
    """How well a layout hypothesis explains the crop: the geometric mean of its character
    confidences (a product would favour short garbage reads), halved for reads under 4 characters."""
    if not read.text:
        return 0.0
    c = np.maximum(np.asarray(read.char_confidences, np.float64), 1e-6)
    return float(np.exp(np.log(c).mean())) * (1.0 if len(read.text) >= 4 else 0.5)


# Doubtful reads are read again from slightly padded (+) and trimmed (-) copies of the crop, as
# (share of the width, share of the height) per side: a box a little too tight or too loose, or a
# row split that falls badly, then gets other chances, and the text the copies agree on wins.
_REREAD_FRAMES: tuple[tuple[float, float], ...] = (
    (0.04, 0.06), (0.08, 0.12), (-0.02, -0.04), (-0.04, -0.06), (0.06, 0.0), (0.0, 0.10))


# A read is doubtful when its least confident character is under this (PlateRecognizer's reread_below).
DEFAULT_REREAD_BELOW = 0.9

# ... but only reads that are nearly there: under this layout score a read is mostly a badge, a grille
# or an unreadable plate, and seven reads of it cost time and find nothing.
_REREAD_MIN_SCORE = 0.5


def reframed(crop: np.ndarray, fx: float, fy: float) -> np.ndarray | None:
    """`crop` padded (edge pixels repeated) or trimmed by fx of its width and fy of its height on
    each side; None when trimming would leave too little to read."""
    h, w = crop.shape[:2]
    px, py = int(round(w * abs(fx))), int(round(h * abs(fy)))
    if fx < 0:
        if w - 2 * px < 8:
            return None
        crop = crop[:, px: w - px]
    if fy < 0:
        if h - 2 * py < 6:
            return None
        crop = crop[py: h - py]
    return cv2.copyMakeBorder(crop, py if fy > 0 else 0, py if fy > 0 else 0, px if fx > 0 else 0,
                              px if fx > 0 else 0, cv2.BORDER_REPLICATE)


_MARK_DOUBT = 0.8  # a character a coloured mark produced is read with less confidence than this
_MARK_COVER = 0.25  # ... and sits where a mark covers at least this share of a column of the model's line


def _only_marks_dropped(read: PlateRead, again: PlateRead, on_marks: tuple[bool, ...]) -> bool:
    """Whether the read with coloured marks painted out is the first read less one or two doubtful
    characters, every other character of which was read with confidence, and surer. Real characters
    are read with confidence (0.95-1.0 where painting hit one on rendered plates); arms read as
    letters are not (0.34-0.76 on real Austrian crops). A first read with doubt elsewhere too is
    left as it is: the re-read would only make a poor read look sure."""
    a, b = read.text, again.text
    if not 1 <= len(a) - len(b) <= 2 or len(b) < 4 or again.confidence < read.confidence:
        return False
    j = 0
    for ch, conf, marked in zip(a, read.char_confidences, on_marks):
        if j < len(b) and b[j] == ch and conf >= _MARK_DOUBT:
            j += 1
        elif conf >= _MARK_DOUBT or not marked:
            return False  # a confidently read character, or one that is not on a mark, would be lost
    return j == len(b) and len(on_marks) == len(a)


class PlateRecognizer:
    """Reads plate crops with the ONNX recognizer: text, per-character and overall confidence, top-k."""

    kind = "plate_recognizer"  # the metadata kind its model file carries (edge.factory.model_problems checks it)

    def __init__(self, model_path: str | Path, threads: int = 1, *, top_k: int = 5, dutch_grammar: bool = True,
                 ignore_marks: bool = True, reread_below: float = DEFAULT_REREAD_BELOW):
        self.contract = ModelContract.from_onnx(model_path)
        self.session = make_session(model_path, threads)
        c = self.contract
        if c.input_channels != 1:
            raise ModelContractError(f"{c.path}: recognizer expects a grey (1-channel) model, got {c.input_channels}")
        self.charset = c.require("charset")
        self.blank = int(c.require("blank_index"))
        n_classes = len(self.charset) + 1
        if not 0 <= self.blank < n_classes:
            raise ModelContractError(f"{c.path}: blank_index {self.blank} outside 0..{n_classes - 1}")
        # class index -> character ("" for blank)
        self.classes = list(self.charset)
        self.classes.insert(self.blank, "")
        self.suppress = [i for i, ch in enumerate(self.classes) if ch and ch in c.get("suppress", "")]
        self.two_row_max = float(c.get("two_row_max_aspect", "1.8"))
        self.one_row_min = float(c.get("one_row_min_aspect", "2.8"))
        self.input_name = self.session.get_inputs()[0].name
        self.top_k = top_k
        self.dutch_grammar = dutch_grammar
        self.ignore_marks = ignore_marks
        self.reread_below = reread_below  # least character confidence under which a crop is read again, reframed
        self._mean = np.float32(c.mean[0])
        self._std = np.float32(c.std[0])

    # ---- geometry -------------------------------------------------------------------------
    @property
    def version(self) -> str:
        """The model's version from its metadata (reported in status and hits)."""
        return self.contract.version

    def rectify(self, image: np.ndarray, corners) -> np.ndarray:
        return rectify(image, corners)

    def layouts(self, crop: np.ndarray, rectified: bool = False) -> tuple[bool, ...]:
        """Two-row hypotheses to try for a crop, from its aspect ratio (both in the ambiguous band)."""
        aspect = crop.shape[1] / max(crop.shape[0], 1)
        if rectified:  # the plate's own shape: one-row 520 x 110 mm, two-row 340 x 210 mm
            return (aspect <= (self.two_row_max + self.one_row_min) / 2,)
        if aspect >= self.one_row_min:
            return (False,)
        # Below that, a box crop may hold a two-row plate or a steeply angled one-row plate:
        # read both ways and keep the more confident read (rectified crops rarely get here).
        return (True, False) if aspect <= self.two_row_max else (False, True)

    # ---- inference ------------------------------------------------------------------------
    def probabilities(self, crop: np.ndarray, two_row: bool) -> np.ndarray:
        """Per-time-step class probabilities (T x C) for one layout hypothesis."""
        return self._probabilities([(crop, two_row)])[0]

    def model_input(self, hypotheses: list[tuple[np.ndarray, bool]]) -> np.ndarray:
        """The model's N x 1 x H x W float32 input for (crop, two_row) hypotheses; public so that tools
        feeding the model directly (int8 calibration) prepare crops exactly as serving does."""
        h, w = self.contract.input_height, self.contract.input_width
        lines = np.stack([line_image(crop, h, w, two_row) for crop, two_row in hypotheses])
        return ((lines.astype(np.float32) * np.float32(1 / 255.0) - self._mean) / self._std)[:, None]

    def _probabilities(self, hypotheses: list[tuple[np.ndarray, bool]]) -> list[np.ndarray]:
        """Probabilities for several (crop, two_row) hypotheses from one batched model run: a
        re-read's copies cost less together than one by one."""
        out = self.session.run(None, {self.input_name: self.model_input(hypotheses)})[0]
        e = np.exp(out - out.max(axis=2, keepdims=True))
        return list(e / e.sum(axis=2, keepdims=True))

    def read(self, image: np.ndarray, corners) -> PlateRead:
        """Read the plate whose corners the detector found; the rectified shape decides the layout."""
        return self._read(self.rectify(image, corners), rectified=True)

    def read_crop(self, crop: np.ndarray) -> PlateRead:
        """Read a crop of unknown origin (e.g. an axis-aligned box): ambiguous shapes are read both ways."""
        return self._read(crop, rectified=False)

    def _read(self, crop: np.ndarray, rectified: bool) -> PlateRead:
        """One read of the crop; a doubtful one is read again from reframed copies of the crop
        (`_REREAD_FRAMES`) and the text with the most summed layout score wins, its confidence
        scaled by that text's share of the summed scores (copies that disagree make it less sure)."""
        if not isinstance(crop, np.ndarray) or crop.ndim not in (2, 3) or crop.size == 0:
            raise ValueError("read_crop: crop must be a non-empty H x W (x 3) uint8 array")
        read = self._read_once(crop, rectified)
        first_score = _layout_score(read)
        if not read.text or first_score < _REREAD_MIN_SCORE or min(read.char_confidences) >= self.reread_below:
            return read
        votes: dict[str, list] = {read.text: [first_score, first_score, read]}
        copies = [c for c in (reframed(crop, fx, fy) for fx, fy in _REREAD_FRAMES) if c is not None]
        for copy, first in zip(copies, self._read_layouts_many(copies, rectified)):
            again = self._read_marks_aware(copy, rectified, first)
            score = _layout_score(again)
            entry = votes.setdefault(again.text, [0.0, -1.0, again])
            entry[0] += score
            if score > entry[1]:  # each text is represented by its most confident reading
                entry[1], entry[2] = score, again
        total, _, best = max(votes.values(), key=lambda e: e[0])
        share = total / max(sum(e[0] for e in votes.values()), 1e-9)
        return replace(best, confidence=best.confidence * share)

    def _read_once(self, crop: np.ndarray, rectified: bool) -> PlateRead:
        """One read of the crop as it is: the best layout, coloured marks considered."""
        return self._read_marks_aware(crop, rectified, self._read_layouts_many([crop], rectified)[0])

    def _read_marks_aware(self, crop: np.ndarray, rectified: bool,
                          first: tuple[PlateRead, bool, _Decoded]) -> PlateRead:
        """`first` (the best read over the layout hypotheses), or the crop read again with coloured
        marks painted out when a doubtful character may be one."""
        read, two_row, decoded = first
        if self.ignore_marks and read.text and min(read.char_confidences, default=1.0) < _MARK_DOUBT:
            marks = paint_out_marks(crop)
            if marks is not None:
                painted, mask = marks
                again = self._read_layouts_many([painted], rectified)[0][0]
                on_marks = self._on_marks(crop, mask, two_row, decoded)
                if _only_marks_dropped(read, again, on_marks):
                    return again
        return read

    def _read_layouts_many(self, crops: list[np.ndarray], rectified: bool) -> list[tuple[PlateRead, bool, _Decoded]]:
        """Per crop: the best read over its layout hypotheses, its layout and its greedy decoding
        (every hypothesis of every crop in one model run)."""
        hypotheses = [(k, i, crop, two_row) for k, crop in enumerate(crops)
                      for i, two_row in enumerate(self.layouts(crop, rectified))]
        probs = self._probabilities([(crop, two_row) for _, _, crop, two_row in hypotheses])
        best: list[tuple[float, tuple[PlateRead, bool, _Decoded]] | None] = [None] * len(crops)
        for (k, i, _, two_row), p in zip(hypotheses, probs):
            r, d = self._decode(p)
            # the shape's own layout comes first; the other must be clearly more confident to win
            score = _layout_score(r) * (1.0 if i == 0 else _OTHER_LAYOUT_FACTOR)
            if best[k] is None or score > best[k][0]:
                best[k] = (score, (r, two_row, d))
        return [b[1] for b in best]  # type: ignore[index]

    def _on_marks(self, crop: np.ndarray, painted_mask: np.ndarray, two_row: bool, d: _Decoded) -> tuple[bool, ...]:
        """For each character (its time steps): does it sit on a painted-out mark in the model's line?"""
        grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
        mask = np.where(painted_mask, 255, 0).astype(np.uint8)
        h, w = self.contract.input_height, self.contract.input_width
        split = _row_split(grey) if two_row and grey.shape[0] >= 2 else None
        line = line_image(mask, h, w, two_row, split) > 127
        cover = line.mean(axis=0)  # share of each column of the line that is mark
        steps = max(d.steps, 1)
        out = []
        for a, b in d.spans:  # CTC peaks sit near, not exactly on, their glyph: one step either side
            c0, c1 = int(max(a - 1, 0) * w / steps), int(min(b + 2, steps) * w / steps)
            out.append(bool(cover[c0:c1].max() >= _MARK_COVER) if c1 > c0 else False)
        return tuple(out)

    # ---- decoding -------------------------------------------------------------------------
    def _greedy(self, probs: np.ndarray) -> _Decoded:
        p = probs.copy()
        if self.suppress:
            p[:, self.suppress] = 0.0
        path = p.argmax(axis=1)
        segs: list[tuple[int, int, int]] = []  # class, first t, last t
        for t, k in enumerate(path):
            if k == self.blank:
                continue
            if segs and segs[-1][0] == k and segs[-1][2] == t - 1:
                segs[-1] = (k, segs[-1][1], t)
            else:
                segs.append((int(k), t, t))
        nb = np.delete(p, self.blank, axis=1)  # non-blank classes, in charset order
        rows, chars, confs = [], [], []
        for k, a, b in segs:
            seg = p[a: b + 1]
            conf = float(seg[:, k].max())
            row = nb[a: b + 1].max(axis=0)
            rows.append(row / max(row.sum(), 1e-9))
            chars.append(self.classes[k])
            confs.append(conf)
        covered = np.zeros(len(path), bool)
        for _, a, b in segs:
            covered[a: b + 1] = True
        gap = float(nb[~covered].max()) if (~covered).any() and nb.shape[1] else 0.0
        pos = np.vstack(rows) if rows else np.zeros((0, nb.shape[1]), np.float32)
        return _Decoded("".join(chars), tuple(confs), pos, gap, tuple((a, b) for _, a, b in segs), len(path))

    def _decode_read(self, probs: np.ndarray) -> PlateRead:
        return self._decode(probs)[0]

    def _decode(self, probs: np.ndarray) -> tuple[PlateRead, _Decoded]:
        d = self._greedy(probs)
        text, confs = d.text, list(d.char_probs)
        country = ""
        if self.dutch_grammar and len(text) == 6:
            cr = nl_constrained_read(d.position_probs, self.charset)
            if cr is not None and self._plausible_change(d, cr.text):
                if cr.text != text:
                    confs = [c if a == b else min(c, p) for a, b, c, p in zip(text, cr.text, confs, cr.char_probs)]
                    text = cr.text
                country = "NL"
        if not country:
            country = guess_country(text)
        gap_factor = 1.0 - 0.5 * min(max(d.gap_risk - 0.2, 0.0) / 0.8, 1.0)
        confidence = float(np.prod(confs)) * gap_factor if text else 0.0
        alternatives = self._alternatives(d, text, confs)
        return PlateRead(
            text=text,
            formatted=format_plate(text, country),
            country=country,
            confidence=confidence,
            char_confidences=tuple(float(c) for c in confs),
            alternatives=alternatives,
        ), d

    def _plausible_change(self, d: _Decoded, nl_text: str) -> bool:
        """The Dutch reading may replace the greedy one only through look-alikes or close second choices."""
        if nl_text == d.text:
            return is_valid_nl(nl_text)
        changes = 0
        for i, (a, b) in enumerate(zip(d.text, nl_text)):
            if a == b:
                continue
            changes += 1
            pa = d.position_probs[i, self.charset.index(a)] if a in self.charset else 0.0
            pb = d.position_probs[i, self.charset.index(b)] if b in self.charset else 0.0
            if frozenset((a, b)) in _LOOKALIKE_PAIRS:
                if pb < 0.002:
                    return False
            elif pb < 0.25 * pa:
                return False
        return changes <= 2

    def _alternatives(self, d: _Decoded, text: str, confs: list[float]) -> tuple[tuple[str, float], ...]:
        """Top-k other texts: best combinations of per-position second choices (independent positions)."""
        if not text or d.position_probs.shape[0] != len(text):
            return ()
        P = d.position_probs
        options = []
        for i, ch in enumerate(text):
            order = np.argsort(-P[i])[:3]
            opts = [(ch, max(float(P[i, self.charset.index(ch)]), 1e-6))]
            opts += [(self.charset[j], float(P[i, j])) for j in order if self.charset[j] != ch and P[i, j] > 0.01]
            options.append(opts)
        beams: list[tuple[str, float]] = [("", 1.0)]
        for opts in options:
            beams = sorted(((s + c, sc * p) for s, sc in beams for c, p in opts), key=lambda x: -x[1])[: self.top_k + 1]
        base = math.prod(o[0][1] for o in options) or 1e-9
        top = float(np.prod(confs)) if confs else 0.0
        out = []
        for s, sc in beams:
            if s == text or sc <= 0:
                continue
            out.append((s, float(min(top * sc / base, 1.0))))
        return tuple(out[: self.top_k])
