#!/usr/bin/env python3
"""Accuracy of the plate recognizer through the serving code (edge.recognizer), per set and country.

    .venv/bin/python scripts/eval_recognizer.py [--model models/recognizer.onnx] [--holdout 2000]

Sets: a rendered hold-out (seed space never used in training), ../shared/data/ocr/openalpr_eu2
(real two-row EU crops, kept out of training), uc3m val (visible characters; '?' = privacy box,
excluded) and openalpr_br val (texts with CRC32 % 5 == 0, as split by train_recognizer.py).
Layout (one or two rows) is decided by the recognizer from the crop, never from the label.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
import zlib
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

from edge.lists.config import ListsConfig  # noqa: E402
from edge.lists.hashing import normalise_plate  # noqa: E402
from edge.lists.matcher import MAX_VARIANTS, plate_variants  # noqa: E402
from edge.recognizer import DEFAULT_REREAD_BELOW, PlateRecognizer  # noqa: E402
from edge.types import PlateRead  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
TARGETS = {"holdout_exact": 0.99, "eu2_nl_exact": 0.95, "eu2_exact": 0.85, "uc3m_visible_chars": 0.95}


def visible_matches(pred: str, label: str) -> tuple[int, int]:
    """(visible label characters read correctly, visible characters); '?' in the label matches anything.

    Characters are aligned by edit distance, so a dropped or doubled character costs only itself;
    a hidden position may be read as anything or as nothing (serving never emits '?').
    """
    n, m = len(label), len(pred)
    skip = [0 if c == "?" else 1 for c in label]
    D = np.zeros((n + 1, m + 1), np.int32)
    D[1:, 0] = np.cumsum(skip)
    D[0, :] = np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            sub = 0 if (label[i - 1] == "?" or label[i - 1] == pred[j - 1]) else 1
            D[i, j] = min(D[i - 1, j - 1] + sub, D[i - 1, j] + skip[i - 1], D[i, j - 1] + 1)
    i, j, good = n, m, 0
    while i > 0 and j > 0:
        sub = 0 if (label[i - 1] == "?" or label[i - 1] == pred[j - 1]) else 1
        if D[i, j] == D[i - 1, j - 1] + sub:
            if sub == 0 and label[i - 1] != "?":
                good += 1
            i, j = i - 1, j - 1
        elif D[i, j] == D[i - 1, j] + skip[i - 1]:
            i -= 1
        else:
            j -= 1
    return good, sum(c != "?" for c in label)


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _count_country(named: dict | None, truth: str, said: str) -> None:
    """Country as the serving names it against the truth: right, wrong or not named."""
    if named is not None:
        named["right" if said == truth else ("none" if not said else "wrong")] += 1


def _country_line(named: dict) -> str:
    n = max(sum(named.values()), 1)
    return (f"  country named right {named['right']} ({100 * named['right'] / n:.1f}%), wrong {named['wrong']} "
            f"({100 * named['wrong'] / n:.1f}%), not named {named['none']}")


LOOKALIKE_BELOW = ListsConfig.model_fields["lookalike_below"].default  # the unit's default


class MatcherFinds:
    """Would a list holding the true plate hit on this read? The unit's own variant rule
    (edge.lists.matcher.plate_variants: the read, its alternatives, then look-alike swaps of doubtful
    characters), applied to one crop's read as if it were a one-frame passage."""

    def __init__(self) -> None:
        self.by_type: dict[str, int] = defaultdict(int)
        self.variants: list[int] = []

    def add(self, read: PlateRead, truth: str) -> None:
        variants = plate_variants(read.text, read.alternatives, read.country, MAX_VARIANTS,
                                  read.char_confidences, LOOKALIKE_BELOW)
        how = dict(variants).get(normalise_plate(truth))
        self.by_type[how or "missed"] += 1
        self.variants.append(len(variants))

    def rate(self) -> float:
        return 1.0 - self.by_type["missed"] / max(len(self.variants), 1)

    def line(self) -> str:
        n = max(len(self.variants), 1)
        found = n - self.by_type["missed"]
        return (f"  a list holding the plate would hit (exact read or the matcher's variants): {found}/{n} = "
                f"{100 * found / n:.2f}% (exact {self.by_type['exact']}, alternative {self.by_type['alternative']}, "
                f"look-alike {self.by_type['lookalike']}); variants looked up per read: median "
                f"{int(np.median(self.variants)) if self.variants else 0}, max {max(self.variants, default=0)}")


def eval_real(rec: PlateRecognizer, items: list[tuple[Path, str, str]], errors: list | None = None,
              named: dict | None = None, finds: MatcherFinds | None = None) -> dict:
    per = defaultdict(lambda: [0, 0])
    for path, text, country in items:
        img = cv2.imread(str(path))
        if img is None:
            raise SystemExit(f"cannot read image {path}")
        r = rec.read_crop(img)
        read = r.text
        _count_country(named, country, r.country)
        if finds is not None:
            finds.add(r, text)
        ok = read == text
        if not ok and errors is not None:
            errors.append((country, text, read, img))
        per[country][0] += ok
        per[country][1] += 1
    return {c: (a, n) for c, (a, n) in sorted(per.items())}


def eval_holdout(rec: PlateRecognizer, n: int, seed: int, strength: float | None,
                 errors: list | None = None, named: dict | None = None, finds: MatcherFinds | None = None) -> dict:
    """Rendered plates through degrade(); strength None = the training mix (0.3-1.2, some unreadable)."""
    from platesynth import degrade, render_plate
    from train_recognizer import SYNTH_COUNTRIES

    per = defaultdict(lambda: [0, 0])
    for i in range(n):
        rng = np.random.default_rng([seed, 2, i])
        country = "NL" if i % 2 == 0 else SYNTH_COUNTRIES[1 + (i // 2) % (len(SYNTH_COUNTRIES) - 1)]
        plate = render_plate(rng, country, scale=float(rng.uniform(0.4, 0.65)))
        s = float(rng.uniform(0.3, 1.2)) if strength is None else strength
        crop = degrade(rng, plate.image, plate.corners, strength=s).image
        r = rec.read_crop(crop)
        read = r.text
        _count_country(named, "" if plate.country == "EU" else plate.country, r.country)
        if finds is not None:
            finds.add(r, plate.text)
        ok = read == plate.text
        if not ok and errors is not None:
            errors.append((plate.country, plate.text, read, crop))
        key = f"{plate.country}/{plate.layout}" if plate.country == "NL" else plate.country
        per[key][0] += ok
        per[key][1] += 1
    return {c: (a, n) for c, (a, n) in sorted(per.items())}


def _total(d: dict) -> tuple[int, int]:
    return sum(a for a, _ in d.values()), sum(n for _, n in d.values())


def _line(name: str, a: int, n: int) -> str:
    return f"  {name:<14} {a:>5}/{n:<5} {100.0 * a / max(n, 1):6.2f}%"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "recognizer.onnx")
    ap.add_argument("--holdout", type=int, default=2000, help="rendered hold-out size (0 = skip)")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--holdout-strength", type=float, default=0.5,
                    help="damage strength of the main hold-out (the harsher training mix is reported too)")
    ap.add_argument("--no-grammar", action="store_true", help="greedy reads only (no Dutch sidecode decoding)")
    ap.add_argument("--no-marks", action="store_true", help="do not re-read crops with coloured marks painted out")
    ap.add_argument("--no-reread", action="store_true",
                    help="do not read doubtful crops again from padded and trimmed copies")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--errors", type=Path, default=None,
                    help="list the misreads of eu2 and the hold-out (truth -> read) and save their crops here")
    args = ap.parse_args(argv)

    rec = PlateRecognizer(args.model, threads=1, dutch_grammar=not args.no_grammar,
                          ignore_marks=not args.no_marks, reread_below=0.0 if args.no_reread else DEFAULT_REREAD_BELOW)
    print(f"model {args.model} version {rec.contract.version} grammar {'off' if args.no_grammar else 'on'}")
    figures: dict[str, float] = {}
    t0 = time.time()

    root = DATA / "ocr" / "openalpr_eu2"
    items = [(root / r["image"], r["text"], r["country"].upper()) for r in _csv(root / "labels.csv")]
    eu2_errors: list | None = [] if args.errors else None
    holdout_errors: list | None = [] if args.errors else None
    named = defaultdict(int)
    finds = MatcherFinds()
    per = eval_real(rec, items, eu2_errors, named, finds)
    a, n = _total(per)
    print(f"openalpr_eu2 (real two-row EU crops, not trained on): exact {a}/{n} = {100 * a / n:.2f}%")
    print(_country_line(named))
    print(finds.line())
    for c, (ca, cn) in per.items():
        print(_line(c, ca, cn))
    figures["eu2_exact"] = a / n
    figures["eu2_list_hit"] = finds.rate()
    figures["eu2_nl_exact"] = per["NL"][0] / per["NL"][1]

    root = DATA / "ocr" / "uc3m"
    good = vis = exact = total = 0
    named = defaultdict(int)
    for r in _csv(root / "labels.csv"):
        if r["split"] != "val" or not r["text"]:
            continue
        img = cv2.imread(str(root / r["image"]))
        read = rec.read_crop(img)
        pred = read.text
        _count_country(named, "ES", read.country)
        g, v = visible_matches(pred, r["text"])
        good, vis, total = good + g, vis + v, total + 1
        exact += (g == v and len(pred) - g <= r["text"].count("?"))  # nothing extra besides hidden spots
    print(f"uc3m val (ES, '?' positions excluded): visible characters {good}/{vis} = {100 * good / vis:.2f}%, "
          f"plates with all visible characters right {exact}/{total} = {100 * exact / total:.2f}%")
    print(_country_line(named))
    figures["uc3m_visible_chars"] = good / vis
    figures["uc3m_visible_plates"] = exact / total

    root = DATA / "ocr" / "openalpr_br"
    items = [(root / r["image"], r["text"], "BR") for r in _csv(root / "labels.csv")
             if zlib.crc32(r["text"].encode()) % 5 == 0]
    finds = MatcherFinds()
    per = eval_real(rec, items, finds=finds)
    a, n = _total(per)
    print(f"openalpr_br val (split by text): exact {a}/{n} = {100 * a / n:.2f}%")
    print(finds.line())
    figures["br_val_exact"] = a / n
    figures["br_val_list_hit"] = finds.rate()

    if args.holdout:
        named = defaultdict(int)
        finds = MatcherFinds()
        per = eval_holdout(rec, args.holdout, args.seed, args.holdout_strength, holdout_errors, named, finds)
        a, n = _total(per)
        print(f"rendered hold-out (seed {args.seed}, damage strength {args.holdout_strength}, half NL, "
              f"40% two-row): exact {a}/{n} = {100 * a / n:.2f}%")
        print(_country_line(named))
        print(finds.line())
        for c, (ca, cn) in per.items():
            print(_line(c, ca, cn))
        figures["holdout_exact"] = a / n
        figures["holdout_list_hit"] = finds.rate()
        nl = [v for k, v in per.items() if k.startswith("NL")]
        figures["holdout_nl_exact"] = sum(x for x, _ in nl) / max(sum(y for _, y in nl), 1)
        per = eval_holdout(rec, args.holdout // 2, args.seed + 1, None)
        a, n = _total(per)
        print(f"rendered hold-out, harsh training mix (strength 0.3-1.2, includes unreadable crops): "
              f"exact {a}/{n} = {100 * a / n:.2f}%")
        figures["holdout_harsh_exact"] = a / n

    if args.errors:
        args.errors.mkdir(parents=True, exist_ok=True)
        for name, errs in (("eu2", eu2_errors), ("holdout", holdout_errors)):
            print(f"misreads, {name} (country: truth -> read):")
            for i, (country, truth, read, img) in enumerate(errs):
                print(f"  {country:<3} {truth:<10} -> {read}")
                cv2.imwrite(str(args.errors / f"{name}_{i:03d}_{country}_{truth}_{read or 'none'}.png"), img)
    print("targets:")
    for k, target in TARGETS.items():
        if k in figures:
            print(f"  {k:<20} {100 * figures[k]:6.2f}%  target {100 * target:.0f}%  "
                  f"{'MET' if figures[k] >= target else 'NOT MET'}")
    print(f"({time.time() - t0:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
