#!/usr/bin/env python3
"""Accuracy of the real pipeline on labelled sets: detection, reading, per country, worst misreads.

Runs the models exactly as the unit does (edge.factory.load_models / build_pipeline: the
detector with the pipeline's score filter, then rectify + read of every kept plate) on the
held-out side of each labelled set in ../shared/data, and on rendered passage videos with a
truth file (scripts/make_test_videos.py, demo/demo.mp4) through the full tracker.

Figures:
- detection recall / precision: a detection is right when its box has IoU >= 0.5 with an unmatched
  labelled plate (greedy, best score first); openalpr_us_br labels one plate per image, so its
  precision is a lower bound (an unlabelled second plate counts as a false positive).
- exact plate accuracy: the read equals the label at every visible position, nothing missing or
  extra ('?' in uc3m labels marks a character hidden by a privacy box: it matches any one character
  or none, since the recognizer rightly reads nothing under a grey box).
- character accuracy: 1 - (edit distance, '?' free) / visible characters, summed over plates
  (a plate's contribution is floored at 0). On detection sets an undetected plate reads "".
- worst misreads: wrong reads ranked by the recognizer's own confidence (a confident misread is
  the one that could become a false hit).

Split rules (../shared/data/README.md): uc3m and ro_dashcam by their `split` column (val);
openalpr_us_br by the detector's family split (scripts/detector_train/sets.py: us_wts-lg-* train,
us_car-*/us_us-* val, others hashed) - `--openalpr-all` also reports the whole set, clearly
labelled as partly training data; ocr/openalpr_eu2 is held out from recognizer training entirely;
ocr/openalpr_br val = texts with CRC32 % 5 == 0 (scripts/train_recognizer.py).

The sets are public, labelled benchmark data, so their texts may be printed here; the unit's own
reads of real traffic never pass through this script.

    .venv/bin/python scripts/evaluate.py                       # all sets + demo video
    .venv/bin/python scripts/evaluate.py --sets ocr/openalpr_eu2 --limit 50
    .venv/bin/python scripts/evaluate.py --videos /tmp/videos/*.mp4 --sets none
    .venv/bin/python scripts/evaluate.py --sets none --render 6 --seed 7      # rendered passage videos
    .venv/bin/python scripts/evaluate.py --markdown docs/results/evaluate.md --json docs/results/evaluate.json \
        --update-doc docs/performance.md
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
import zlib
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

from detector_train.sets import openalpr_split  # noqa: E402  (the detector's own held-out rule)

from edge.config import DetectionConfig  # noqa: E402
from edge.types import box_iou as iou  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
DETECT_SETS = ("detect/uc3m", "detect/ro_dashcam", "detect/openalpr_us_br")
OCR_SETS = ("ocr/uc3m", "ocr/openalpr_eu2", "ocr/openalpr_br")
ALL_SETS = DETECT_SETS + OCR_SETS
SET_COUNTRY = {"uc3m": "ES", "ro_dashcam": "RO"}  # sets without a country column
CONFIDENT = 0.9  # a wrong read at or above this confidence is counted as a confident misread


# ---- labelled data --------------------------------------------------------------------------

@dataclass(frozen=True)
class Plate:
    box: tuple[float, float, float, float]
    text: str  # "" when the label has no text


@dataclass(frozen=True)
class Still:
    """One labelled frame of a detection set."""

    set: str
    image: Path
    country: str  # upper case, "" when unknown
    plates: tuple[Plate, ...]


@dataclass(frozen=True)
class Crop:
    """One labelled plate crop of an OCR set."""

    set: str
    image: Path
    country: str
    text: str


def _split_of(set_name: str, row: dict) -> str:
    """The side of the split a labelled row is on ('val' is what gets evaluated)."""
    if set_name == "detect/openalpr_us_br":
        return openalpr_split(row["image"])
    if set_name == "ocr/openalpr_eu2":
        return "val"  # never used in training
    if set_name == "ocr/openalpr_br":
        return "val" if zlib.crc32(row["text"].encode()) % 5 == 0 else "train"
    split = row.get("split", "")
    if split not in ("train", "val"):
        raise ValueError(f"{set_name}: row for {row.get('image')!r} has split {split!r}, expected 'train' or 'val'")
    return split


def _rows(set_name: str, root: Path) -> list[dict]:
    labels = root / set_name / "labels.csv"
    if not labels.exists():
        raise FileNotFoundError(f"labelled set {set_name!r}: {labels} not found")
    with open(labels, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _country(set_name: str, row: dict) -> str:
    return (row.get("country") or SET_COUNTRY.get(set_name.split("/")[1], "")).upper()


def load_stills(set_name: str, root: Path = DATA, sides: Sequence[str] = ("val",)) -> list[Still]:
    """Frames of a detection set on the given split sides, plates grouped per image."""
    plates: dict[str, list[Plate]] = defaultdict(list)
    meta: dict[str, tuple[str, str]] = {}
    for n, r in enumerate(_rows(set_name, root), start=2):
        try:
            box = tuple(float(r[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{root / set_name / 'labels.csv'} line {n}: box is not four numbers") from None
        plates[r["image"]].append(Plate(box, r.get("text") or ""))
        meta[r["image"]] = (_split_of(set_name, r), _country(set_name, r))
    return [Still(set_name, root / set_name / img, meta[img][1], tuple(p)) for img, p in sorted(plates.items())
            if meta[img][0] in sides]


def load_crops(set_name: str, root: Path = DATA, sides: Sequence[str] = ("val",)) -> list[Crop]:
    """Crops of an OCR set on the given split sides (rows without text are skipped: nothing to score)."""
    return [Crop(set_name, root / set_name / r["image"], _country(set_name, r), r["text"])
            for r in _rows(set_name, root) if r["text"] and _split_of(set_name, r) in sides]


def subsample(items: list, limit: int | None) -> list:
    """At most `limit` items spread evenly over the list (deterministic), for quick runs."""
    if not limit or len(items) <= limit:
        return items
    idx = np.linspace(0, len(items) - 1, limit).round().astype(int)
    return [items[i] for i in sorted(set(idx))]


def read_image(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"{path}: not a readable image")
    return img


# ---- scoring --------------------------------------------------------------------------------

def match_boxes(det_boxes: Sequence[Sequence[float]], det_scores: Sequence[float],
                gt_boxes: Sequence[Sequence[float]], min_iou: float = 0.5) -> dict[int, int]:
    """Greedy one-to-one matching, best detection first: {detection index: labelled plate index}."""
    used: set[int] = set()
    pairs: dict[int, int] = {}
    for di in sorted(range(len(det_boxes)), key=lambda i: -det_scores[i]):
        best, bj = min_iou, -1
        for j, g in enumerate(gt_boxes):
            if j not in used:
                v = iou(det_boxes[di], g)
                if v >= best:
                    best, bj = v, j
        if bj >= 0:
            used.add(bj)
            pairs[di] = bj
    return pairs


def text_distance(truth: str, read: str) -> int:
    """Levenshtein distance where a '?' in the truth (a character hidden by a privacy box) is free: it
    matches any one character or none (a reader may rightly give nothing for a grey box)."""
    prev = [0] * (len(read) + 1)
    for j in range(1, len(read) + 1):
        prev[j] = j
    for t in truth:
        hidden = t == "?"
        cur = [prev[0] + (0 if hidden else 1)]
        for j, r in enumerate(read, 1):
            cur.append(min(prev[j] + (0 if hidden else 1), cur[j - 1] + 1,
                           prev[j - 1] + (0 if hidden or t == r else 1)))
        prev = cur
    return prev[-1]


def visible(truth: str) -> int:
    return sum(c != "?" for c in truth)


def is_exact(truth: str, read: str) -> bool:
    """Every visible character read, in order, and nothing else (hidden '?' positions: any one or none)."""
    return text_distance(truth, read) == 0


@dataclass
class ReadRecord:
    """One labelled plate and what the pipeline read for it ('' when it was not detected)."""

    set: str
    item: str  # image file name
    country: str
    truth: str
    read: str
    confidence: float
    detected: bool = True

    @property
    def exact(self) -> bool:
        return is_exact(self.truth, self.read)

    @property
    def chars_correct(self) -> int:
        return max(0, visible(self.truth) - text_distance(self.truth, self.read))


@dataclass
class ReadFigures:
    plates: int = 0
    detected: int = 0
    exact: int = 0
    chars: int = 0  # visible label characters
    chars_correct: int = 0
    confident_wrong: int = 0  # wrong reads with confidence >= CONFIDENT

    def add(self, r: ReadRecord) -> None:
        self.plates += 1
        self.detected += r.detected
        self.exact += r.exact
        self.chars += visible(r.truth)
        self.chars_correct += r.chars_correct
        self.confident_wrong += (not r.exact) and r.detected and r.confidence >= CONFIDENT

    def as_dict(self) -> dict:
        return {**asdict(self), "exact_acc": _ratio(self.exact, self.plates),
                "exact_acc_detected": _ratio(self.exact, self.detected), "char_acc": _ratio(self.chars_correct, self.chars)}


@dataclass
class DetFigures:
    images: int = 0
    plates: int = 0
    detections: int = 0
    true_pos: int = 0

    def add(self, other: "DetFigures") -> None:
        for k in ("images", "plates", "detections", "true_pos"):
            setattr(self, k, getattr(self, k) + getattr(other, k))

    def as_dict(self) -> dict:
        return {**asdict(self), "recall": _ratio(self.true_pos, self.plates),
                "precision": _ratio(self.true_pos, self.detections)}


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def score_still(still: Still, det_boxes, det_scores, reads: Sequence[tuple[str, float]],
                min_iou: float = 0.5) -> tuple[DetFigures, list[ReadRecord]]:
    """Detection counts of one frame and a read record for each labelled plate with text."""
    gt = [p.box for p in still.plates]
    pairs = match_boxes(det_boxes, det_scores, gt, min_iou)
    by_gt = {g: d for d, g in pairs.items()}
    figs = DetFigures(images=1, plates=len(gt), detections=len(det_boxes), true_pos=len(pairs))
    records = []
    for j, p in enumerate(still.plates):
        if not p.text:
            continue
        d = by_gt.get(j)
        text, conf = reads[d] if d is not None else ("", 0.0)
        records.append(ReadRecord(still.set, still.image.name, still.country, p.text, text, conf, d is not None))
    return figs, records


# ---- running the pipeline --------------------------------------------------------------------

@dataclass
class SetResult:
    set: str
    side: str  # which split side was evaluated, in words
    detection: DetFigures | None = None
    det_by_country: dict[str, DetFigures] = field(default_factory=dict)
    records: list[ReadRecord] = field(default_factory=list)
    seconds: float = 0.0
    aggregate: bool = True  # False for an extra view of a set (openalpr_us_br as a whole): not summed again


def evaluate_stills(stills: Iterable[Still], pipeline, side: str = "val") -> SetResult:
    """Detector (with the pipeline's score and width filters) + rectify/read of every kept plate."""
    stills = list(stills)
    res = SetResult(stills[0].set if stills else "?", side, DetFigures())
    t0 = time.perf_counter()
    for s in stills:
        img = read_image(s.image)
        dets = [d for d in pipeline.detector.detect(img, roi=pipeline.roi, roll=pipeline.roll)
                if d.score >= pipeline.min_score and d.box[2] - d.box[0] >= pipeline.min_plate_width]
        reads = []
        for d in dets:
            try:
                r = pipeline.recognizer.read_crop(pipeline.recognizer.rectify(img, d.corners))
                reads.append((r.text, r.confidence))
            except ValueError:  # a degenerate quad: the unit would skip it too
                reads.append(("", 0.0))
        figs, records = score_still(s, [d.box for d in dets], [d.score for d in dets], reads)
        res.detection.add(figs)
        res.det_by_country.setdefault(s.country or "?", DetFigures()).add(figs)
        res.records += records
    res.seconds = time.perf_counter() - t0
    return res


def evaluate_crops(crops: Iterable[Crop], recognizer, side: str = "val") -> SetResult:
    """The recognizer on labelled crops (no detector: the crop is the plate)."""
    crops = list(crops)
    res = SetResult(crops[0].set if crops else "?", side)
    t0 = time.perf_counter()
    for c in crops:
        r = recognizer.read_crop(read_image(c.image))
        res.records.append(ReadRecord(c.set, c.image.name, c.country, c.text, r.text, r.confidence))
    res.seconds = time.perf_counter() - t0
    return res


def read_figures(records: Iterable[ReadRecord]) -> ReadFigures:
    f = ReadFigures()
    for r in records:
        f.add(r)
    return f


def worst_misreads(records: Iterable[ReadRecord], n: int) -> list[ReadRecord]:
    """Wrong reads of detected plates, most confident first (ties: furthest from the truth)."""
    wrong = [r for r in records if r.detected and not r.exact]
    wrong.sort(key=lambda r: (-r.confidence, -text_distance(r.truth, r.read), r.set, r.item))
    return wrong[:n]


def evaluate_videos(videos: Sequence[Path], detector, recognizer) -> list[dict]:
    """Passages per vehicle and read accuracy on rendered videos (truth JSON beside each video)."""
    from bench_pipeline import run_video, score  # the passage scorer shared with tests/test_passages_video.py

    from edge.factory import build_pipeline
    from edge.motion import MotionConfig
    from edge.tracker import TrackerConfig
    det = DetectionConfig()  # the unit's defaults: boxes under min_plate_width px are not read at all
    out = []
    for video in videos:
        truth_path = video.with_suffix(".json")
        if not truth_path.exists():
            truth_path = video.parent / f"{video.stem}_truth.json"
        if not truth_path.exists():
            raise FileNotFoundError(f"{video}: no truth file {video.with_suffix('.json').name} or "
                                    f"{video.stem}_truth.json beside it")
        truth = json.loads(truth_path.read_text())
        pipe = build_pipeline(detector, recognizer, tracking=TrackerConfig(), motion=MotionConfig(),
                              min_score=det.min_score, min_plate_width=det.min_plate_width)
        t0 = time.perf_counter()
        r = score(run_video(video, pipe), truth)
        n = r.passages - r.spurious
        out.append({"video": str(video.relative_to(ROOT)) if video.is_relative_to(ROOT) else str(video),
                    "frames": truth.get("frames"), "vehicles": r.vehicles, "optional": r.optional,
                    "passages": r.passages, "one_passage": r.one_passage, "missed": r.missed,
                    "duplicates": r.duplicates, "spurious": r.spurious, "read_correct": r.correct,
                    "read_acc": _ratio(r.correct, n), "direction_ok": r.direction_ok,
                    "misreads": [{"truth": t, "read": p} for t, p in r.errors],
                    "seconds": round(time.perf_counter() - t0, 1)})
    return out


# ---- reporting ------------------------------------------------------------------------------

def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _table(head: Sequence[str], rows: Iterable[Sequence]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def build_report(results: list[SetResult], videos: list[dict], worst: int, header: dict) -> tuple[str, dict]:
    """Markdown text and a JSON-able dict of every figure."""
    md = [f"Models: detector `{header['detector']}`, plate verifier `{header.get('verifier', 'none')}`, "
          f"corner refiner `{header.get('refiner', 'none')}`, recognizer `{header['recognizer']}`; "
          f"detector score >= {header['min_score']}, min plate width {header['min_plate_width']} px"
          + (f"; at most {header['limit']} items per set (evenly spaced)" if header.get("limit") else "") + "."]
    data: dict = {"header": header, "sets": [], "countries": {}, "videos": videos, "worst_misreads": []}
    det_sets = [r for r in results if r.detection is not None]
    if det_sets:
        md += ["", "**Detection** (IoU >= 0.5)", ""]
        md += _table(["set", "split evaluated", "images", "plates", "detections", "recall", "precision"],
                     [(r.set, r.side, r.detection.images, r.detection.plates, r.detection.detections,
                       _pct(r.detection.as_dict()["recall"]), _pct(r.detection.as_dict()["precision"]))
                      for r in det_sets])
    md += ["", "**Reading** (exact: every visible character right; char acc: 1 - edit distance / characters; "
           f"conf. wrong: misreads with confidence >= {CONFIDENT})", ""]
    rows = []
    for r in results:
        f = read_figures(r.records)
        if not f.plates:
            continue
        e2e = r.detection is not None
        rows.append((r.set + (" (end to end)" if e2e else ""), r.side, f.plates,
                     f"{f.detected}" if e2e else "–", _pct(f.as_dict()["exact_acc"]),
                     _pct(f.as_dict()["exact_acc_detected"]) if e2e else "–",
                     _pct(f.as_dict()["char_acc"]), f.confident_wrong))
    md += _table(["set", "split evaluated", "plates", "detected", "exact", "exact of detected", "char acc",
                  "conf. wrong"], rows)
    for r in results:
        data["sets"].append({"set": r.set, "side": r.side, "seconds": round(r.seconds, 1),
                             "detection": r.detection.as_dict() if r.detection else None,
                             "detection_by_country": {c: f.as_dict() for c, f in sorted(r.det_by_country.items())},
                             "reading": read_figures(r.records).as_dict()})

    # per country: crops (recognizer alone) and frames (end to end) kept apart, they measure different things
    by_country: dict[tuple[str, str], list[ReadRecord]] = defaultdict(list)
    det_country: dict[str, DetFigures] = defaultdict(DetFigures)
    for r in (r for r in results if r.aggregate):
        kind = "frames" if r.detection is not None else "crops"
        for rec in r.records:
            by_country[(rec.country or "?", kind)].append(rec)
        for c, f in r.det_by_country.items():
            det_country[c].add(f)
    crow = []
    for c in sorted({c for c, _ in by_country} | set(det_country)):
        cf = read_figures(by_country.get((c, "crops"), []))
        ff = read_figures(by_country.get((c, "frames"), []))
        df = det_country.get(c)
        sets = sorted({rec.set for k in ("crops", "frames") for rec in by_country.get((c, k), [])}
                      | {r.set for r in results if r.aggregate and c in r.det_by_country})
        crow.append((c, ", ".join(sets),
                     df.plates if df else "–", _pct(df.as_dict()["recall"]) if df else "–",
                     cf.plates or "–", _pct(cf.as_dict()["exact_acc"]) if cf.plates else "–",
                     _pct(cf.as_dict()["char_acc"]) if cf.plates else "–",
                     ff.plates or "–", _pct(ff.as_dict()["exact_acc"]) if ff.plates else "–"))
        data["countries"][c] = {"sets": sets, "detection": df.as_dict() if df else None,
                                "crops": cf.as_dict() if cf.plates else None,
                                "frames_end_to_end": ff.as_dict() if ff.plates else None}
    md += ["", "**Per country** (held-out sides only)", ""]
    md += _table(["country", "sets", "plates in frames", "detection recall", "crops", "crop exact", "crop char acc",
                  "plates read in frames", "end-to-end exact"], crow)

    if videos:
        d = DetectionConfig()
        md += ["", "**Rendered passage videos** (full pipeline with tracker and voting, the unit's defaults: "
               f"detector score >= {d.min_score}, plates under {d.min_plate_width} px wide not read)", ""]
        md += _table(["video", "frames", "vehicles", "exactly one passage", "missed", "duplicates", "spurious",
                      "read correctly"],
                     [(v["video"], v["frames"], f"{v['vehicles']} (+{v['optional']} barely visible)",
                       f"{v['one_passage']}/{v['vehicles']}",
                       v["missed"], v["duplicates"], v["spurious"],
                       f"{v['read_correct']}/{v['passages'] - v['spurious']} ({_pct(v['read_acc'])})") for v in videos])
        if len(videos) > 1:
            tot = {k: sum(v[k] for v in videos) for k in ("frames", "vehicles", "optional", "passages", "one_passage",
                                                          "missed", "duplicates", "spurious", "read_correct")}
            n = tot["passages"] - tot["spurious"]
            md.append(f"| **all {len(videos)} videos** | {tot['frames']} | {tot['vehicles']} (+{tot['optional']} barely "
                      f"visible) | {tot['one_passage']}/{tot['vehicles']} | {tot['missed']} | {tot['duplicates']} | "
                      f"{tot['spurious']} | {tot['read_correct']}/{n} ({_pct(_ratio(tot['read_correct'], n))}) |")
        misreads = [f"{m['truth']} → {m['read'] or '(empty)'}" for v in videos for m in v.get("misreads", [])]
        if misreads:
            md += ["", "Misread passages (truth → consensus read): " + ", ".join(misreads) + "."]
        md.append("")
        md.append("Barely visible vehicles (fewer than 5 frames of a >= 40 px plate) may give a passage but are not "
                  "counted as missed when they give none.")

    all_records = [rec for r in results if r.aggregate for rec in r.records]
    bad = worst_misreads(all_records, worst)
    if bad:
        md += ["", f"**Worst misreads** (the {len(bad)} most confident wrong reads of detected plates)", ""]
        md += _table(["set", "image", "label", "read", "confidence", "edit distance"],
                     [(b.set, b.item, f"`{b.truth}`", f"`{b.read}`" if b.read else "(empty)", f"{b.confidence:.3f}",
                       text_distance(b.truth, b.read)) for b in bad])
        data["worst_misreads"] = [{**asdict(b), "distance": text_distance(b.truth, b.read)} for b in bad]
    return "\n".join(md) + "\n", data


def write_outputs(args, script: str, md: str, data: dict) -> None:
    """--markdown, --json and --update-doc outputs, shared by evaluate.py and bench.py."""
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(md)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=1) + "\n")
    if args.update_doc:
        update_doc(args.update_doc, script, md)


def update_doc(doc: Path, tag: str, body: str) -> None:
    """Replace the text between <!-- BEGIN tag --> and <!-- END tag --> in doc (both markers must exist)."""
    text = doc.read_text()
    begin, end = f"<!-- BEGIN {tag} -->", f"<!-- END {tag} -->"
    a, b = text.find(begin), text.find(end)
    if a < 0 or b < a:
        raise SystemExit(f"{doc}: markers {begin} ... {end} not found")
    doc.write_text(text[: a + len(begin)] + "\n" + body.rstrip("\n") + "\n" + text[b:])


# ---- command line ---------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog="Figures: see the module docstring.")
    ap.add_argument("--data", type=Path, default=DATA, help="folder laid out like ../shared/data")
    ap.add_argument("--sets", default=",".join(ALL_SETS),
                    help="comma-separated sets (detect/<name>, ocr/<name>), or 'none'")
    ap.add_argument("--videos", type=Path, nargs="*", default=[ROOT / "demo" / "demo.mp4"],
                    help="rendered videos with truth JSON beside them (default: the demo video); none with --videos")
    ap.add_argument("--render", type=int, default=0, metavar="N",
                    help="also render N passage videos (scripts/make_test_videos.py, 640x480) into a temporary "
                         "folder and evaluate them")
    ap.add_argument("--seed", type=int, default=7, help="seed of the rendered videos")
    ap.add_argument("--detector", type=Path, default=ROOT / "models" / "detector.onnx")
    ap.add_argument("--verifier", default=str(ROOT / "models" / "plate_verifier.onnx"),
                    help="plate verifier ONNX file (second look at doubtful detector boxes); '' for none")
    ap.add_argument("--refiner", default=str(ROOT / "models" / "corner_refiner.onnx"),
                    help="corner refiner ONNX file (closer look at each box's corners); '' for none")
    ap.add_argument("--recognizer", type=Path, default=ROOT / "models" / "recognizer.onnx")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime threads per model (1 = the unit default; 0 = all cores)")
    ap.add_argument("--no-close-ups", action="store_true",
                    help="no second, smaller search of frames where no plate was found (detection.close_ups: false)")
    ap.add_argument("--min-score", type=float, default=0.4, help="detector score filter (the unit's default)")
    ap.add_argument("--min-plate-width", type=float, default=0.0,
                    help="plate width filter in px (default 0: score the detector on every plate size)")
    ap.add_argument("--openalpr-all", action="store_true",
                    help="also report detect/openalpr_us_br as a whole (includes detector training images)")
    ap.add_argument("--limit", type=int, help="evaluate at most this many frames/crops per set (evenly spaced)")
    ap.add_argument("--worst", type=int, default=20, help="number of worst misreads to list")
    ap.add_argument("--markdown", type=Path, help="write the markdown tables here")
    ap.add_argument("--json", type=Path, help="write every figure as JSON here")
    ap.add_argument("--update-doc", type=Path, help="replace the evaluate.py block of this markdown file")
    args = ap.parse_args(argv)

    sets = [] if args.sets.strip() == "none" else [s.strip() for s in args.sets.split(",") if s.strip()]
    for s in sets:
        if s not in ALL_SETS:
            raise SystemExit(f"--sets: unknown set {s!r}; known: {', '.join(ALL_SETS)}")
    verifier_path = Path(args.verifier) if args.verifier else None
    refiner_path = Path(args.refiner) if args.refiner else None
    for p in (args.detector, args.recognizer) + tuple(q for q in (verifier_path, refiner_path) if q):
        if not p.exists():
            raise SystemExit(f"model {p} not found (trained by scripts/train_detector.py / train_recognizer.py)")

    from edge.detector import CLOSE_UP_SCALE, PlateDetector
    from edge.factory import build_pipeline
    from edge.corner_refiner import CornerRefiner
    from edge.plate_verifier import PlateVerifier
    from edge.recognizer import PlateRecognizer
    verifier = PlateVerifier(verifier_path, threads=args.threads) if verifier_path else None
    refiner = CornerRefiner(refiner_path, threads=args.threads) if refiner_path else None
    detector = PlateDetector(args.detector, threads=args.threads, verifier=verifier, refiner=refiner,
                             close_up_scale=0.0 if args.no_close_ups else CLOSE_UP_SCALE, close_up_below=args.min_score)
    recognizer = PlateRecognizer(args.recognizer, threads=args.threads)
    pipeline = build_pipeline(detector, recognizer, min_score=args.min_score, min_plate_width=args.min_plate_width)

    results: list[SetResult] = []
    for s in sets:
        if s in DETECT_SETS:
            sides = [("val", ("val",))]
            if s == "detect/openalpr_us_br":
                sides = [("val (detector held-out families)", ("val",))]
                if args.openalpr_all:
                    sides.append(("all (incl. detector training images)", ("train", "val")))
            elif s == "detect/ro_dashcam":
                sides = [("val (sequences)", ("val",))]
            for label, side in sides:
                stills = subsample(load_stills(s, args.data, side), args.limit)
                results.append(evaluate_stills(stills, pipeline, label))
                results[-1].aggregate = side == ("val",)
        else:
            label = {"ocr/openalpr_eu2": "all (held out of training)",
                     "ocr/openalpr_br": "val (CRC32(text) % 5 == 0)"}.get(s, "val")
            results.append(evaluate_crops(subsample(load_crops(s, args.data), args.limit), recognizer, label))
        print(f"[evaluate] {s}: {results[-1].seconds:.1f} s", file=sys.stderr, flush=True)
    video_paths = [Path(v).resolve() for v in args.videos or []]
    with tempfile.TemporaryDirectory(prefix="evaluate-videos-") as tmp:
        if args.render > 0:
            from make_test_videos import build_suite, write_video
            for i, scene in enumerate(build_suite(args.render, args.seed, 640, 480)):
                video_paths.append(Path(tmp) / f"rendered_s{args.seed}_{i:02d}.mp4")
                write_video(scene, video_paths[-1], seed=args.seed * 1000 + i)
        videos = evaluate_videos(video_paths, detector, recognizer) if video_paths else []
        for v in videos:
            if v["video"].startswith(tmp):
                v["video"] = "rendered: " + Path(v["video"]).name

    header = {"detector": detector.version, "recognizer": recognizer.contract.version,
              "verifier": verifier.version if verifier else "none",
              "refiner": refiner.version if refiner else "none",
              "detector_file": str(args.detector), "recognizer_file": str(args.recognizer),
              "min_score": args.min_score, "min_plate_width": args.min_plate_width, "limit": args.limit,
              "command": "scripts/evaluate.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    md, data = build_report(results, videos, args.worst, header)
    print(md)
    write_outputs(args, "evaluate.py", md, data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
