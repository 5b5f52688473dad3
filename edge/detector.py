"""Plate detector serving: any frame size in, plate boxes and four corners in original pixels out.

The ONNX model (trained by scripts/train_detector.py) sees the frame letterboxed so its long side
is the model's `input_long_side` (416) and both sides are multiples of `input_multiple`; it returns
a stride-4 plate-centre heat map whose non-peaks are already zeroed, and 12 regression channels per
cell (see the model's `outputs` metadata). Decoding is a threshold, a gather and a small NMS here.

A region of interest (a polygon in original pixels) is searched by cropping its bounding
rectangle, so the lanes get the model's full resolution and nothing outside costs time; plates
whose centre lies outside the polygon are dropped.

A rolled camera (`roll`, degrees the scene leans clockwise on screen, as `anpr-edge camera aim`
measures it) is undone before the search: the frame (or region) is turned level in the same
warp that scales it to the model's input, so the model sees upright plates as it was trained to,
and the corners are turned back to original pixels. A camera's roll is fixed where it is mounted,
so a measured figure in the config costs nothing per frame but the warp.

With a plate verifier (edge.plate_verifier), boxes whose score is doubtful (at least
`score_threshold`, under `verify_below`) get a second look at their own pixels, and their score
becomes the geometric mean of the detector's score and the verifier's plate probability: a badge
the detector half believed falls away, a faint plate the verifier is sure of rises.

With a corner refiner (edge.corner_refiner), every box returned gets its corners from a closer look
at its own pixels, where the refined quad is plausible; the box becomes the one those corners span.

Close-ups: the model learnt plates up to about half its input wide, so a plate filling much of the
frame (a car stopped close to the camera, a gate camera) scores low. When a search finds no plate
scored at least `close_up_below`, the frame is searched again at `close_up_scale` of the input size
(a fraction of the cost, and only on such frames), and what that finds is kept only if
it is at least `CLOSE_UP_MIN_WIDTH` of the searched window's long side: smaller boxes there are the
normal search's business.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from edge.corner_refiner import CornerRefiner, plausible
from edge.modelcontract import ModelContract, ModelContractError, make_session
from edge.plate_lean import check_roll
from edge.plate_verifier import PlateVerifier
from edge.types import Detection

Polygon = Sequence[Sequence[float]]

CLOSE_UP_SCALE = 0.4  # input size of the close-up search, as a share of the normal search's
CLOSE_UP_MIN_WIDTH = 0.2  # share of the searched window's long side a close-up search box must span


class PlateDetector:
    """Finds licence plates in BGR frames with the ONNX plate detector.

    `score_threshold` is the lowest plate score kept (the pipeline may filter higher);
    `max_upscale` limits how much a small frame or region is enlarged before detection;
    `verifier` re-scores boxes scored under `verify_below`, `refiner` places every returned box's
    corners (see the module docstring); `refine_first` has the verifier look at the refined boxes instead
    of the detector's own (a box cut short across a large plate shows the verifier only part of it);
    `close_up_scale` (0 = off) and `close_up_below` govern the close-up search (module docstring).
    """

    kind = "plate_detector"  # the metadata kind its model file must carry

    def __init__(self, model_path: str | Path, threads: int = 1, score_threshold: float = 0.3,
                 nms_iou: float = 0.5, max_detections: int = 50, max_upscale: float = 2.0,
                 verifier: PlateVerifier | None = None, verify_below: float = 0.7,
                 refiner: CornerRefiner | None = None, refine_first: bool = False,
                 close_up_scale: float = CLOSE_UP_SCALE, close_up_below: float = 0.4):
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be within 0..1, got {score_threshold}")
        if not 0.0 <= close_up_scale < 1.0:
            raise ValueError(f"close_up_scale must be within [0, 1), got {close_up_scale}")
        if not 0.0 <= verify_below <= 1.0:
            raise ValueError(f"verify_below must be within 0..1, got {verify_below}")
        if not 0.0 < nms_iou <= 1.0:
            raise ValueError(f"nms_iou must be within (0, 1], got {nms_iou}")
        self.contract = ModelContract.from_onnx(model_path)
        if self.contract.kind != self.kind:
            raise ModelContractError(f"{model_path}: metadata kind is {self.contract.kind!r}, expected {self.kind!r}")
        c = self.contract
        try:
            self.long_side = int(c.require("input_long_side"))
            self.multiple = int(c.require("input_multiple"))
            self.stride = int(c.require("stride"))
            self.pad_value = int(c.get("pad_value", "114"))
        except ValueError as exc:
            raise ModelContractError(f"{model_path}: detector metadata is not an integer: {exc}") from None
        self.rgb = c.get("channel_order", "RGB").upper() == "RGB"
        self.mean = np.asarray(c.mean, np.float32) * 255.0
        self.inv_std = 1.0 / (np.asarray(c.std, np.float32) * 255.0)
        self.session = make_session(model_path, threads)
        self.input_name = self.session.get_inputs()[0].name
        self.score_threshold = float(score_threshold)
        self.nms_iou = float(nms_iou)
        self.max_detections = int(max_detections)
        self.max_upscale = float(max_upscale)
        self.verifier = verifier
        self.verify_below = float(verify_below)
        self.refiner = refiner
        self.refine_first = bool(refine_first)
        self.close_up_scale = float(close_up_scale)
        self.close_up_below = float(close_up_below)

    @property
    def version(self) -> str:
        return self.contract.version

    def detect(self, image: np.ndarray, roi: Polygon | None = None, roll: float = 0.0) -> list[Detection]:
        """All plates in image (BGR uint8, H x W x 3), best score first, in original-image pixels.
        roll: degrees the scene leans clockwise on screen; the search is done on the frame turned level."""
        _check_image(image)
        roll = check_roll(roll)
        frame = image
        H, W = image.shape[:2]
        ox, oy = 0, 0
        poly = None
        if roi is not None:
            poly = _check_roi(roi)
            x1, y1 = np.floor(poly.min(0)).astype(int)
            x2, y2 = np.ceil(poly.max(0)).astype(int)
            x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, W), min(y2, H)
            if x2 - x1 < 2 or y2 - y1 < 2:
                return []
            ox, oy = x1, y1
            image = image[y1:y2, x1:x2].copy()
            mask = np.zeros(image.shape[:2], np.uint8)
            cv2.fillPoly(mask, [np.round(poly - (x1, y1)).astype(np.int32)], 255)
            image[mask == 0] = self.pad_value
        region = None if poly is None else poly - (ox, oy)
        out = self._second_looks(frame, self._search(image, roll, region, poly, (ox, oy), W, H, self.long_side))
        if self.close_up_scale and not any(d.score >= self.close_up_below for d in out):
            min_width = CLOSE_UP_MIN_WIDTH * max(image.shape[:2])
            side = max(int(round(self.long_side * self.close_up_scale)), self.multiple)
            near = [d for d in self._search(image, roll, region, poly, (ox, oy), W, H, side)
                    if d.box[2] - d.box[0] >= min_width]
            if near:
                out = _merged(out + self._second_looks(frame, near), self.nms_iou)
        return out

    def _search(self, image: np.ndarray, roll: float, region: np.ndarray | None, poly: np.ndarray | None,
                offset: tuple[int, int], W: int, H: int, long_side: int) -> list[Detection]:
        """One model run over `image` (the frame or its region's crop at `offset`) scaled to `long_side`:
        the detector's own boxes in frame pixels, those whose centre lies outside the ROI dropped."""
        if roll:
            x, back = self.levelled_input(image, roll, region, long_side)
        else:
            x, k = self.letterbox(image, long_side)
            back = np.array([[1.0 / k, 0.0, 0.0], [0.0, 1.0 / k, 0.0]])
        heat, reg = self.session.run(None, {self.input_name: x})
        out = []
        for score, quad in self._decode(heat[0, 0], reg[0]):
            quad = quad @ back[:, :2].T + back[:, 2] + offset
            if poly is not None:
                c = quad.mean(0)
                if cv2.pointPolygonTest(poly.astype(np.float32), (float(c[0]), float(c[1])), False) < 0:
                    continue
            d = _clipped_detection(quad, float(score), W, H)
            if d is not None:
                out.append(d)
        return out

    def _second_looks(self, frame: np.ndarray, out: list[Detection]) -> list[Detection]:
        """The verifier's and the corner refiner's looks at the boxes of one search."""
        if self.refiner is not None and self.refine_first:
            out = self._refine(frame, out)
        if self.verifier is not None:
            out = self._verify(frame, out)
        if self.refiner is not None and not self.refine_first:
            out = self._refine(frame, out)
        return out

    def _refine(self, frame: np.ndarray, dets: list[Detection]) -> list[Detection]:
        """Corners (and the box they span) from the corner refiner, where its quad is plausible."""
        if not dets:
            return dets
        H, W = frame.shape[:2]
        out = []
        for d, quad in zip(dets, self.refiner.corners(frame, [d.box for d in dets], [d.corners for d in dets])):
            refined = _clipped_detection(quad, d.score, W, H) if plausible(quad, d.box) else None
            out.append(refined or d)
        return out

    def _verify(self, frame: np.ndarray, dets: list[Detection]) -> list[Detection]:
        """Doubtful boxes re-scored by the verifier, best score first again."""
        doubtful = [i for i, d in enumerate(dets) if d.score < self.verify_below]
        if not doubtful:
            return dets
        probs = self.verifier.probabilities(frame, [dets[i].box for i in doubtful])
        dets = list(dets)
        for i, p in zip(doubtful, probs):
            d = dets[i]
            dets[i] = Detection(box=d.box, corners=d.corners, score=float(np.sqrt(d.score * float(p))))
        return sorted(dets, key=lambda d: -d.score)

    def letterbox(self, image: np.ndarray, long_side: int | None = None) -> tuple[np.ndarray, float]:
        """The model input for a BGR image (1 x C x H x W float32) and the scale applied to it; public so
        that tools feeding the model directly (int8 calibration) prepare frames exactly as serving does.
        `long_side` (default the model's input_long_side) is the input's long side."""
        h, w = image.shape[:2]
        k, nw, nh = self._fit(w, h, long_side)
        return self._tensor(shrink(image, nw, nh)), k

    def levelled_input(self, image: np.ndarray, roll: float, region: np.ndarray | None = None,
                       long_side: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The model input for a BGR image whose scene leans `roll` degrees clockwise, and the 2 x 3
        affine map from input pixels back to image pixels. The image is turned level about its centre,
        then scaled and padded as `letterbox` does. Without a region the window is the image's own size:
        plates keep the scale an unrolled search gives them (small plates are what a larger canvas would
        cost), and the frame's corners that turn out of the window (about 12 % of a 16:9 frame at 12
        degrees) are not searched. With a region (the ROI polygon, in image pixels) the window is the
        region's bounding box once turned level, so all of it is searched, and a lane that leans with the
        camera gets a tighter window (a larger scale) than its leaning bounding box."""
        h, w = image.shape[:2]
        turn = np.vstack([cv2.getRotationMatrix2D((w / 2, h / 2), roll, 1.0), [0.0, 0.0, 1.0]])
        if region is None:
            lo, span = np.zeros(2), np.array([w, h], np.float64)
        else:
            pts = np.clip(np.asarray(region, np.float64), 0, (w, h)) @ turn[:2, :2].T + turn[:2, 2]
            lo, span = pts.min(0), np.maximum(pts.max(0) - pts.min(0), 1.0)
        k, nw, nh = self._fit(span[0], span[1], long_side)
        sx, sy = nw / span[0], nh / span[1]
        forward = np.array([[sx, 0, -sx * lo[0]], [0, sy, -sy * lo[1]], [0, 0, 1]]) @ turn  # image -> input px
        src, warp = image, forward
        if k < 0.5:  # shrink first, as letterbox does, so the turn does not alias
            sw, sh = max(int(round(w * k)), 1), max(int(round(h * k)), 1)
            src = shrink(image, sw, sh)
            warp = forward @ np.diag([w / sw, h / sh, 1.0])
        level = cv2.warpAffine(src, warp[:2], (nw, nh), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=(self.pad_value,) * 3)
        return self._tensor(level), np.linalg.inv(forward)[:2]

    def _fit(self, w: float, h: float, long_side: int | None = None) -> tuple[float, int, int]:
        """Scale and picture size (before padding) of a w x h window in the model input: its long side
        at `long_side` (default input_long_side), enlarged at most max_upscale."""
        k = min((long_side or self.long_side) / max(w, h), self.max_upscale)
        return k, max(int(round(w * k)), 1), max(int(round(h * k)), 1)

    def _tensor(self, picture: np.ndarray) -> np.ndarray:
        """A BGR picture of the input's scale, padded with pad_value to multiples of input_multiple, as
        the normalised 1 x C x H x W model input."""
        m = self.multiple
        nh, nw = picture.shape[:2]
        ph, pw = -(-nh // m) * m, -(-nw // m) * m
        canvas = cv2.copyMakeBorder(picture, 0, ph - nh, 0, pw - nw, cv2.BORDER_CONSTANT, value=(self.pad_value,) * 3)
        # one plane at a time (cache-sized passes): about 7x faster than cv2.dnn.blobFromImage or a
        # whole-image float conversion and transpose, 0.2 against 1.5 ms for a 416 x 320 frame
        planes = cv2.split(canvas)
        if self.rgb:
            planes = planes[::-1]
        x = np.empty((1, len(planes), ph, pw), np.float32)
        for i, plane in enumerate(planes):
            np.multiply(np.subtract(plane, self.mean[i], dtype=np.float32), self.inv_std[i], out=x[0, i])
        return x

    def _decode(self, heat: np.ndarray, reg: np.ndarray) -> list[tuple[float, np.ndarray]]:
        """Peaks above threshold -> (score, 4x2 corners in model-input pixels), NMS'd."""
        ys, xs = np.nonzero(heat >= self.score_threshold)
        if len(ys) == 0:
            return []
        scores = heat[ys, xs]
        order = np.argsort(-scores)[: self.max_detections * 4]
        ys, xs, scores = ys[order], xs[order], scores[order]
        r = reg[:, ys, xs]  # 12 x N
        s = self.stride
        cx = (xs + 0.5 + r[0]) * s
        cy = (ys + 0.5 + r[1]) * s
        bw = np.exp(np.clip(r[2], -3, 7)) * s
        bh = np.exp(np.clip(r[3], -3, 7)) * s
        qx = cx[:, None] + r[4:12:2].T * bw[:, None]
        qy = cy[:, None] + r[5:12:2].T * bh[:, None]
        quads = np.stack([qx, qy], -1)  # N x 4 x 2
        boxes = np.concatenate([quads.min(1), quads.max(1)], 1)
        keep = _nms(boxes, scores, self.nms_iou)[: self.max_detections]
        return [(float(scores[i]), quads[i].astype(np.float64)) for i in keep]


def shrink(image: np.ndarray, nw: int, nh: int) -> np.ndarray:
    """image resized to nw x nh as the detector's training frames were (area averaging where the
    scale is under 1/2, else linear), in fewer operations for large frames: halved first (a linear
    resize to half size averages 2 x 2 pixels) while it is at least 4x the target, so area averaging
    does only the last step. 1920x1080 -> 416 x 234 takes 3.2 against 7.2 ms (4K: 5.9 against 26.7 ms)
    on the x86 test host, for the same picture within about a grey level; frames up to 1664 px long
    are resized exactly as before. Halving on down to 2x (then linear) would take 0.8 ms, but moved a
    few boxes on the val sets: the model was trained on area-averaged frames."""
    h, w = image.shape[:2]
    while w >= 4 * nw and h >= 4 * nh:
        w, h = w // 2, h // 2
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if w >= 2 * nw else cv2.INTER_LINEAR)


def _clipped_detection(quad: np.ndarray, score: float, W: int, H: int) -> Detection | None:
    """A detection from four corners clipped to a W x H frame, with the box they span; None when
    less than a pixel of it is left inside the frame."""
    quad = np.stack([quad[:, 0].clip(0, W), quad[:, 1].clip(0, H)], 1)
    x1, y1 = quad.min(0)
    x2, y2 = quad.max(0)
    if x2 - x1 < 1 or y2 - y1 < 1:
        return None
    return Detection(box=(float(x1), float(y1), float(x2), float(y2)),
                     corners=tuple((float(px), float(py)) for px, py in quad), score=score)


def _merged(dets: list[Detection], iou: float) -> list[Detection]:
    """Detections of two searches as one list, best score first, a box that overlaps a better one dropped."""
    boxes = np.array([d.box for d in dets], np.float64).reshape(-1, 4)
    return [dets[i] for i in _nms(boxes, np.array([d.score for d in dets], np.float64), iou)]


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    order = list(np.argsort(-scores))
    keep: list[int] = []
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while order:
        i = order.pop(0)
        keep.append(i)
        if not order:
            break
        rest = np.asarray(order)
        xx1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        ov = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        order = [j for j, o in zip(order, ov) if o < iou]
    return keep


def _check_image(image) -> None:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"detect() needs a numpy image, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"detect() needs a BGR image of shape H x W x 3, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"detect() needs a uint8 image, got dtype {image.dtype}")
    if image.shape[0] < 8 or image.shape[1] < 8:
        raise ValueError(f"detect() needs an image of at least 8 x 8 pixels, got {image.shape[1]} x {image.shape[0]}")


def _check_roi(roi: Polygon) -> np.ndarray:
    try:
        poly = np.asarray(roi, np.float64)
    except (TypeError, ValueError):
        raise ValueError("roi must be a list of [x, y] points in frame pixels") from None
    if poly.ndim != 2 or poly.shape[1] != 2 or len(poly) < 3:
        raise ValueError(f"roi must be a polygon of at least 3 [x, y] points, got shape {poly.shape}")
    if not np.all(np.isfinite(poly)):
        raise ValueError("roi points must be finite numbers")
    return poly
