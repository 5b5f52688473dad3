"""`anpr-edge read` and `replay` on real media with the models in models/, as a person runs them."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import cv2

from conftest import ROOT, SHARED_DATA, box_iou as iou
from unit_support import DEMO, demo_truth

RO = SHARED_DATA / "detect" / "ro_dashcam"


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout)


def val_frames(n: int) -> dict[str, list[tuple[float, ...]]]:
    boxes: dict[str, list[tuple[float, ...]]] = {}
    with open(RO / "labels.csv", newline="") as f:
        for r in csv.DictReader(f):
            if r["split"] == "val" and r["image"].split("/")[-1].startswith("dayride_type1_002"):
                boxes.setdefault(r["image"], []).append(tuple(float(r[k]) for k in ("xmin", "ymin", "xmax", "ymax")))
    return dict(sorted(boxes.items())[:n])


def test_read_json_on_real_frames_finds_the_labelled_plates(tmp_path):
    frames = val_frames(8)
    for name in frames:
        shutil.copy(RO / name, tmp_path / name.split("/")[-1])
    res = cli("read", "--json", str(tmp_path))
    assert res.returncode == 0, res.stderr
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(lines) == len(frames)
    found = total = 0
    for line in lines:
        assert set(line) == {"image", "plates", "ms"} and isinstance(line["ms"], float)
        h, w = cv2.imread(line["image"]).shape[:2]
        for p in line["plates"]:
            assert set(p) == {"text", "formatted", "country", "confidence", "box", "corners"}
            x1, y1, x2, y2 = p["box"]
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h  # original-image pixels
            assert len(p["corners"]) == 4 and all(len(c) == 2 for c in p["corners"])
            assert p["text"].isalnum() and 0 <= p["confidence"] <= 1
        labels = frames["images/" + line["image"].split("/")[-1]]
        total += len(labels)
        found += sum(any(iou(b, p["box"]) >= 0.3 for p in line["plates"]) for b in labels)
    assert found >= 0.7 * total, f"only {found} of {total} labelled plates found"


def test_read_reports_unreadable_image_and_goes_on(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    good = tmp_path / "good.jpg"
    shutil.copy(RO / next(iter(val_frames(1))), good)
    res = cli("read", "--json", str(bad), str(good))
    assert res.returncode == 1
    assert "broken.jpg: cannot read image" in res.stderr
    assert len(res.stdout.splitlines()) == 1 and json.loads(res.stdout)["image"] == str(good)


def test_read_with_missing_model_is_a_clear_error(tmp_path):
    res = cli("read", "--models", str(tmp_path), str(RO / next(iter(val_frames(1)))))
    assert res.returncode == 2 and "model file not found" in res.stderr


def test_replay_json_gives_one_line_per_vehicle_passage():
    res = cli("replay", "--json", str(DEMO / "demo.mp4"))
    assert res.returncode == 0, res.stderr
    passages = [json.loads(line) for line in res.stdout.splitlines()]
    for p in passages:
        assert set(p) == {"text", "formatted", "country", "confidence", "first_seen_ms", "last_seen_ms", "frames"}
        assert p["first_seen_ms"] <= p["last_seen_ms"] and p["frames"] >= 1
    truth = demo_truth()
    fps = truth["fps"]
    read = 0
    for v in truth["vehicles"]:
        same = [p for p in passages if p["text"] == v["text"]]
        assert len(same) <= 1, f"vehicle {v['formatted']} gave {len(same)} passages"
        if same:
            read += 1
            p = same[0]
            assert v["first_frame"] / fps * 1000 - 200 <= p["first_seen_ms"]
            assert p["last_seen_ms"] <= v["last_frame"] / fps * 1000 + 200
            assert p["formatted"] == v["formatted"] and p["country"] == "NL"
    assert read >= len(truth["vehicles"]) - 1, f"only {read} of {len(truth['vehicles'])} vehicles read exactly"


def test_replay_of_an_image_folder(tmp_path):
    cap = cv2.VideoCapture(str(DEMO / "demo.mp4"))
    for i in range(60):
        ok, frame = cap.read()
        assert ok
        cv2.imwrite(str(tmp_path / f"{i:04d}.jpg"), frame)
    res = cli("replay", "--json", str(tmp_path))
    assert res.returncode == 0, res.stderr
    texts = [json.loads(line)["text"] for line in res.stdout.splitlines()]
    assert demo_truth()["vehicles"][0]["text"] in texts
