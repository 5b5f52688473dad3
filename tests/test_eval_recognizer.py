"""scripts/eval_recognizer.py: the 'a list holding the plate would hit' measure uses the unit's own
variant rule, checked on hand-made reads and on real eu2 crops read by the real model."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import eval_recognizer as er  # noqa: E402

from edge.recognizer import PlateRecognizer  # noqa: E402
from edge.types import PlateRead  # noqa: E402


def _read(text, alternatives=(), confidences=None, country="NL"):
    confidences = confidences if confidences is not None else (0.999,) * len(text)
    return PlateRead(text=text, formatted=text, country=country, confidence=0.9,
                     char_confidences=tuple(confidences), alternatives=tuple(alternatives))


def test_matcher_finds_counts_exact_alternative_lookalike_and_missed():
    finds = er.MatcherFinds()
    finds.add(_read("XSNB23"), "XSNB23")  # exact
    finds.add(_read("XSNB28", alternatives=[("XSNB23", 0.3)]), "XSNB23")  # second choice
    # a doubtful 8 may be a B: the look-alike swap finds the Dutch plate 12BBB1 (sidecode 7 shape)
    finds.add(_read("12B8B1", confidences=(0.999, 0.999, 0.999, 0.6, 0.999, 0.999), country=""), "12BBB1")
    finds.add(_read("12B8B1", country=""), "12BBB1")  # the same 8 read surely: no swap, a missed plate
    finds.add(_read(""), "XSNB23")  # nothing read
    assert dict(finds.by_type) == {"exact": 1, "alternative": 1, "lookalike": 1, "missed": 2}
    assert abs(finds.rate() - 3 / 5) < 1e-9
    assert "3/5 = 60.00%" in finds.line()


def test_matcher_finds_on_real_eu2_crops(shared_data):
    root = shared_data / "ocr" / "openalpr_eu2"
    with open(root / "labels.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["country"] == "nl"][:10]
    rec = PlateRecognizer(ROOT / "models" / "recognizer.onnx", threads=1)
    finds = er.MatcherFinds()
    exact = 0
    for r in rows:
        read = rec.read_crop(cv2.imread(str(root / r["image"])))
        exact += read.text == r["text"]
        finds.add(read, r["text"])
    assert finds.by_type["exact"] == exact >= 9  # the card: 28 of 28 Dutch eu2 crops read exactly
    assert finds.rate() >= exact / len(rows) and len(finds.variants) == len(rows)
