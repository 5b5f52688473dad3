"""Candidates for real plates the val labels forgot: detections that overlap no labelled box.

Runs the shipped detector over the val (or, with --split train, the train) images of the three real
detection sets and writes every detection that matches no labelled box (IoU < 0.3 and
intersection-over-smaller < 0.5, the evaluation's `overlap_min`) as a numbered tile into montage
PNGs, plus candidates.json:

    nice -n 10 .venv/bin/python scripts/detector_train/find_unlabelled.py --out /tmp/unlabelled

Each tile shows 3x the detection's size around it, the detection in red and labelled boxes in green,
enlarged so a small plate is easy to judge. A person then looks at every tile and lists the real
plates in scripts/detector_train/val_unlabelled_plates.json (ignore regions for
scripts/eval_detector.py); this tool only proposes, it decides nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from detector_train.sets import DATA, SETS, load_set  # noqa: E402
from edge.detector import PlateDetector  # noqa: E402
from eval_detector import iou, overlap_min  # noqa: E402

TILE = 300  # tile side in the montage
COLS, ROWS = 4, 3


def is_unlabelled(box, labels) -> bool:
    """Whether a detection matches no labelled box (IoU < 0.3 and intersection-over-smaller < 0.5)."""
    return not any(iou(box, g) >= 0.3 or overlap_min(box, g) >= 0.5 for g in labels)


def tile(img: np.ndarray, box, gts, number: int) -> np.ndarray:
    """3x the box around its centre, enlarged (~40 px plate -> ~200 px), red detection, green labels."""
    H, W = img.shape[:2]
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    side = max(3 * w, 3 * h, 24)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    cx1, cy1 = int(cx - side / 2), int(cy - side / 2)
    cx2, cy2 = int(cx + side / 2), int(cy + side / 2)
    pad = max(0, -cx1, -cy1, cx2 - W, cy2 - H)
    big = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(60, 60, 60))
    crop = big[cy1 + pad:cy2 + pad, cx1 + pad:cx2 + pad]
    k = TILE / crop.shape[1]
    crop = cv2.resize(crop, (TILE, int(round(crop.shape[0] * k))), interpolation=cv2.INTER_CUBIC)

    def rect(b, colour):
        p1 = (int(round((b[0] - cx1) * k)), int(round((b[1] - cy1) * k)))
        p2 = (int(round((b[2] - cx1) * k)), int(round((b[3] - cy1) * k)))
        cv2.rectangle(crop, p1, p2, colour, 1)

    for g in gts:
        rect(g, (0, 200, 0))
    rect(box, (0, 0, 255))
    out = np.zeros((TILE, TILE, 3), np.uint8)
    out[:crop.shape[0], :crop.shape[1]] = crop[:TILE]
    cv2.putText(out, str(number), (4, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 4)
    cv2.putText(out, str(number), (4, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 255, 255), 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "detector.onnx"))
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=Path("/tmp/unlabelled"))
    ap.add_argument("--score", type=float, default=0.3)
    ap.add_argument("--split", choices=("val", "train"), default="val",
                    help="val: ignore regions for the evaluation; train: regions the training loss skips")
    args = ap.parse_args()

    # the normal search only, as when the mined files of the model cards were made
    det = PlateDetector(args.model, threads=1, score_threshold=args.score, close_up_scale=0.0)
    args.out.mkdir(parents=True, exist_ok=True)
    cands, tiles = [], []
    for name in SETS:
        n_set = 0
        for s in load_set(name, args.data):
            if s.split != args.split:
                continue
            img = cv2.imread(str(s.image))
            gts = [list(map(float, b)) for b in s.boxes]
            for d in det.detect(img):
                b = d.box
                if not is_unlabelled(b, gts):
                    continue
                number = len(cands)
                cands.append({"number": number, "set": name, "image": f"images/{s.image.name}",
                              "box": [round(v, 1) for v in b], "score": round(d.score, 3)})
                tiles.append(tile(img, b, gts, number))
                n_set += 1
        print(f"{name}: {n_set} candidates")
    per = COLS * ROWS
    for m in range(0, len(tiles), per):
        chunk = tiles[m:m + per]
        chunk += [np.zeros((TILE, TILE, 3), np.uint8)] * (per - len(chunk))
        rows = [np.hstack(chunk[r * COLS:(r + 1) * COLS]) for r in range(ROWS)]
        cv2.imwrite(str(args.out / f"montage_{m // per:03d}.png"), np.vstack(rows))
    (args.out / "candidates.json").write_text(json.dumps(cands, indent=1))
    print(f"{len(cands)} candidates, montages in {args.out}")


if __name__ == "__main__":
    main()
