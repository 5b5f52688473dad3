"""The real detection sets, their validation splits, and a resized cache for cheap training.

The split rules come from the shared data README: uc3m and ro_dashcam carry their own split; in
openalpr_us_br the fixed-camera `us_wts-lg-*` frames stay on the training side and the other
families are split so no family straddles both sides (see `openalpr_split`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import pickle
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "detect"
SETS = ("uc3m", "ro_dashcam", "openalpr_us_br")
CACHE_LONG_SIDE = 416
TRAIN_IGNORE = Path(__file__).resolve().parent / "train_unlabelled_plates.json"


@dataclass
class Sample:
    """One real frame: where it lives, its split, and plate boxes in that file's pixels."""

    set: str
    image: Path
    split: str
    boxes: np.ndarray  # N x 4 float32, xmin ymin xmax ymax


def openalpr_split(name: str) -> str:
    """Split by file-name family: us_wts-lg-* train; us_car-*, us_us-* val; other us and br by a stable hash.

    Brazilian file names carry the plate text, so hashing the three-letter prefix keeps any repeated
    car (same letters) on one side; the remaining one-off web photos are hashed by name.
    """
    stem = Path(name).stem
    if stem.startswith("us_wts-lg"):
        return "train"
    if stem.startswith("us_car") or stem.startswith("us_us"):
        return "val"
    key = stem[:6] if stem.startswith("br_") else stem
    h = int(hashlib.sha1(key.encode()).hexdigest(), 16) % 100
    return "val" if h < 35 else "train"


def load_set(name: str, root: Path = DATA) -> list[Sample]:
    """All frames of one set with their boxes and split (raises if the set is missing)."""
    folder = root / name
    labels = folder / "labels.csv"
    if not labels.exists():
        raise FileNotFoundError(f"detection set {name!r}: {labels} not found")
    boxes: dict[str, list] = defaultdict(list)
    split: dict[str, str] = {}
    with open(labels, newline="") as f:
        for row in csv.DictReader(f):
            img = row["image"]
            boxes[img].append([float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax")])
            split[img] = row.get("split") or openalpr_split(img)
    return [Sample(name, folder / img, split[img], np.asarray(b, np.float32).reshape(-1, 4))
            for img, b in sorted(boxes.items())]


def load_all(root: Path = DATA) -> list[Sample]:
    return [s for name in SETS for s in load_set(name, root)]


@dataclass
class Cached:
    """A frame resized so its long side is CACHE_LONG_SIDE, JPEG-encoded, boxes scaled with it."""

    set: str
    name: str
    split: str
    jpeg: bytes
    boxes: np.ndarray

    def decode(self) -> np.ndarray:
        return cv2.imdecode(np.frombuffer(self.jpeg, np.uint8), cv2.IMREAD_COLOR)


def build_cache(path: Path, root: Path = DATA) -> list[Cached]:
    """Resize every frame once (the loader then only decodes small JPEGs); reuses an existing cache."""
    if path.exists():
        with open(path, "rb") as f:
            return pickle.load(f)
    out = []
    for s in load_all(root):
        img = cv2.imread(str(s.image), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"{s.image}: not a readable image")
        h, w = img.shape[:2]
        k = CACHE_LONG_SIDE / max(h, w)
        img = cv2.resize(img, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        out.append(Cached(s.set, s.image.name, s.split, buf.tobytes(), s.boxes * k))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(out, f)
    tmp.replace(path)
    return out


def load_train_ignore(path: Path | None, cache: list[Cached], root: Path = DATA) -> dict[tuple[str, str], np.ndarray]:
    """Don't-care boxes of training frames (plates their labels lack), scaled like the cached frames:
    {(set, file name): M x 4}. Empty when `path` is None. Boxes of val frames are refused, so a list
    meant for training can never leak into the evaluation's frames."""
    if path is None:
        return {}
    out = {}
    for key, image, boxes in _train_frame_entries(path, cache, "training don't-care regions"):
        with Image.open(root / key[0] / image) as im:
            k = CACHE_LONG_SIDE / max(im.size)
        out[key] = np.asarray(boxes, np.float32).reshape(-1, 4) * k
    return out


def load_hard_frames(path: Path | None, cache: list[Cached], weight: float) -> dict[tuple[str, str], float]:
    """Draw weights of hard training frames (scripts/detector_train/mine_hard_frames.py): {(set, file
    name): 1 + weight * errors}, errors (false boxes + missed plates) capped at 3 so one cluttered
    frame cannot crowd out the rest. Empty when `path` is None; val frames are refused."""
    if path is None:
        return {}
    return {key: 1.0 + weight * min(e["false"] + e["missed"], 3)
            for key, _, e in _train_frame_entries(path, cache, "a training weight")}


def draw_probabilities(frames: list[Cached], weights: dict[tuple[str, str], float]) -> np.ndarray:
    """Probability of drawing each of `frames` (one set's train frames): its weight (1 when unlisted)
    over their sum, so hard frames come more often while the set keeps its share of the draws."""
    w = np.array([weights.get((c.set, c.name), 1.0) for c in frames], np.float64)
    return w / w.sum()


def _train_frame_entries(path: Path, cache: list[Cached], what: str):
    """(key, "images/<file>", value) of a per-frame JSON list ({"sets": {set: {image: value}}}), checked to
    name train frames of the cache only: a list made for training must never touch an evaluation frame."""
    sets = json.loads(Path(path).read_text())["sets"]
    split = {(c.set, c.name): c.split for c in cache}
    for name, images in sets.items():
        for image, value in images.items():
            key = (name, Path(image).name)
            if key not in split:
                raise ValueError(f"{path}: {name}/{image} is not a frame of the detection sets")
            if split[key] != "train":
                raise ValueError(f"{path}: {name}/{image} is a {split[key]} frame; only train frames may have {what}")
            yield key, image, value
