#!/usr/bin/env python
"""Compare two `eval_detector.py --json F --per-plate` runs on the plates both find.

    .venv/bin/python scripts/compare_detector_runs.py before.json after.json

A plate verifier only re-scores boxes, so swapping it changes which plates are found, and a mean
corner error over different plates moves with the hard plates gained or lost. This prints, per set,
the corner error of each run over the plates both runs find, and how many plates only one run finds
(with the mean corner error of those), so a box-fit change and a found-plates change are told apart.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def found_plates(run: dict, name: str) -> dict[tuple[str, int], float]:
    """{(image key, plate index): corner error} of one set's found plates at the run's score."""
    rows = run[name]["at_score"].get("per_plate")
    if rows is None:
        raise SystemExit(f"set {name!r} has no per-plate list: rerun eval_detector.py with --per-plate")
    return {(key, int(idx)): float(err) for key, idx, err in rows}


def _mean(vals) -> float:
    vals = list(vals)
    return sum(vals) / len(vals) if vals else float("nan")


def compare(before: dict, after: dict) -> dict[str, dict]:
    """Per set present in both runs: common plates, their mean corner error before and after, and the
    plates only one run finds."""
    out = {}
    for name in before:
        if name not in after:
            continue
        a, b = found_plates(before, name), found_plates(after, name)
        common = sorted(set(a) & set(b))
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        out[name] = {"common": len(common),
                     "corner_before": _mean(a[k] for k in common), "corner_after": _mean(b[k] for k in common),
                     "only_before": len(only_a), "only_before_corner": _mean(a[k] for k in only_a),
                     "only_after": len(only_b), "only_after_corner": _mean(b[k] for k in only_b)}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    args = ap.parse_args(argv)
    rows = compare(json.loads(args.before.read_text()), json.loads(args.after.read_text()))
    print(f"{'set':22s} {'common':>6s} {'corner before':>13s} {'after':>7s} {'change':>7s}   "
          f"{'only before (corner)':>20s} {'only after (corner)':>20s}")
    for name, r in rows.items():
        print(f"{name:22s} {r['common']:6d} {r['corner_before']:13.4f} {r['corner_after']:7.4f} "
              f"{r['corner_after'] - r['corner_before']:+7.4f}   "
              f"{r['only_before']:8d} ({r['only_before_corner']:.3f})  {r['only_after']:8d} ({r['only_after_corner']:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
