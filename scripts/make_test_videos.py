#!/usr/bin/env python3
"""Rendered test videos of vehicle passages with known plates, and the scene renderer they share.

A fixed roadside camera looks along a road. Vehicles (simple car bodies carrying plates from
scripts/platesynth) drive towards the camera or away from it in a small pinhole model, so plates
grow or shrink and move like real ones. Effects that break trackers are placed on purpose:
motion-blurred frames, a lamp post in front of the road, frames where a plate is hidden or washed
out by glare, two vehicles at once, stop-and-go, a vehicle parked for the whole video.

Backgrounds: real frames from ../shared/data/detect/ro_dashcam (MIT) with their labelled plates,
and any plate the committed detector still finds, blurred out (test videos, never committed), or a
procedural road (the committed demo video, see scripts/make_demo_video.py). Every video gets a
ground-truth JSON beside it:

    {"fps", "width", "height", "frames", "vehicles": [{"text", "country", "formatted",
      "first_frame", "last_frame", "direction", "parked"}]}

Usage:
    .venv/bin/python scripts/make_test_videos.py --out /tmp/videos --count 12 --seed 1 [--size 640x480]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

from platesynth import RenderedPlate, render_plate  # noqa: E402

from edge.grammar import format_plate  # noqa: E402

DASHCAM = ROOT.parent / "shared" / "data" / "detect" / "ro_dashcam"
PLATE_W_M, CAM_H_M, PLATE_H_M = 0.52, 1.6, 0.5  # plate width, camera height, plate centre height (m)
FOCAL = 2.0  # focal length in image widths (a moderate tele lens, as ANPR cameras use)
READABLE_PX = 40  # plate width from which a vehicle counts as readable in the ground truth


@dataclass
class Vehicle:
    """One vehicle: its plate and where it is (distance Z ahead of the camera, lateral X) over time."""

    plate: RenderedPlate
    start_s: float  # time it enters the scene
    lane_x: float  # metres right of the camera axis (negative: left)
    z_of_t: list[tuple[float, float]]  # (seconds after start, distance in metres), piecewise linear
    body_bgr: tuple[int, int, int] = (160, 160, 160)
    front: bool = True  # front of the car faces the camera (approaching); rear lights otherwise
    yaw: float = 0.0  # plate seen slightly from the side (-0.2..0.2)
    glare_s: list[tuple[float, float]] = field(default_factory=list)  # plate washed out in these intervals
    hidden_s: list[tuple[float, float]] = field(default_factory=list)  # plate covered in these intervals

    @property
    def end_s(self) -> float:
        return self.start_s + self.z_of_t[-1][0]

    def z_at(self, t: float) -> float | None:
        rel = t - self.start_s
        if rel < 0 or rel > self.z_of_t[-1][0]:
            return None
        for (t0, z0), (t1, z1) in zip(self.z_of_t, self.z_of_t[1:]):
            if t0 <= rel <= t1:
                return z0 + (z1 - z0) * (rel - t0) / max(t1 - t0, 1e-9)
        return self.z_of_t[-1][1]


@dataclass
class Scene:
    width: int
    height: int
    fps: float
    duration_s: float
    background: np.ndarray  # BGR, width x height
    vehicles: list[Vehicle]
    blur_frames: set[int] = field(default_factory=set)  # motion-blurred frames
    posts_x: list[float] = field(default_factory=list)  # lamp posts in front of the road (fraction of width)
    noise: float = 2.0  # sensor noise sigma
    horizon: float = 0.36  # vanishing point height (fraction of height)

    @property
    def focal(self) -> float:
        return FOCAL * self.width


def _project(scene: Scene, x_m: float, h_m: float, z: float) -> tuple[float, float]:
    f = scene.focal
    return scene.width / 2 + f * x_m / z, scene.height * scene.horizon + f * (CAM_H_M - h_m) / z


def plate_corners(scene: Scene, v: Vehicle, z: float) -> np.ndarray:
    """Plate corners TL, TR, BR, BL in frame pixels at distance z."""
    ph, pw = v.plate.image.shape[:2]
    h_m = PLATE_W_M * ph / pw
    cx, cy = _project(scene, v.lane_x, PLATE_H_M, z)
    w = scene.focal * PLATE_W_M / z
    h = w * h_m / PLATE_W_M
    k = v.yaw  # one side nearer: taller
    return np.array([[cx - w / 2, cy - h / 2 * (1 - k)], [cx + w / 2, cy - h / 2 * (1 + k)],
                     [cx + w / 2, cy + h / 2 * (1 + k)], [cx - w / 2, cy + h / 2 * (1 - k)]], np.float32)


def body_box(scene: Scene, v: Vehicle, z: float) -> tuple[float, float, float, float]:
    """The car body's bounding box in frame pixels (for occlusion in the ground truth)."""
    (x0, y0), (x1, y1) = _project(scene, v.lane_x - 0.95, 1.45, z), _project(scene, v.lane_x + 0.95, 0.0, z)
    return x0, y0, x1, y1


def _draw_body(img: np.ndarray, scene: Scene, v: Vehicle, z: float) -> None:
    """A simple car seen from the front or the rear: body, window, lights, wheels, shadow."""
    def p(x, h):
        return _project(scene, v.lane_x + x, h, z)

    (x0, y_top), (x1, y_bot) = p(-0.9, 1.45), p(0.9, 0.25)
    (_, y_belt) = p(0, 0.95)
    col = tuple(int(c) for c in v.body_bgr)
    dark = tuple(int(c * 0.55) for c in v.body_bgr)
    (sx0, sy), (sx1, _) = p(-0.95, 0.0), p(0.95, 0.0)
    cv2.ellipse(img, (int((sx0 + sx1) / 2), int(sy)), (int((sx1 - sx0) / 2), max(int((sx1 - sx0) / 14), 1)), 0, 0, 360,
                (35, 35, 35), -1, cv2.LINE_AA)
    (wx0, wy), (wx1, _) = p(-0.8, 0.25), p(0.8, 0.25)
    ww = max(int((x1 - x0) * 0.12), 2)
    (_, wyb) = p(0, 0.0)
    cv2.rectangle(img, (int(wx0), int(wy)), (int(wx0) + ww, int(wyb)), (20, 20, 20), -1)
    cv2.rectangle(img, (int(wx1) - ww, int(wy)), (int(wx1), int(wyb)), (20, 20, 20), -1)
    roof = np.array([p(-0.7, 1.45), p(0.7, 1.45), p(0.85, 0.98), p(-0.85, 0.98)], np.int32)
    cv2.rectangle(img, (int(x0), int(y_belt)), (int(x1), int(y_bot)), col, -1, cv2.LINE_AA)
    cv2.fillConvexPoly(img, roof, col, cv2.LINE_AA)
    win = np.array([p(-0.62, 1.38), p(0.62, 1.38), p(0.76, 1.02), p(-0.76, 1.02)], np.int32)
    cv2.fillConvexPoly(img, win, (60, 50, 45) if v.front else (45, 40, 40), cv2.LINE_AA)
    light = (200, 230, 240) if v.front else (40, 40, 190)
    for sx in (-0.72, 0.52):
        (a, b), (c, d) = p(sx, 0.85), p(sx + 0.2, 0.72)
        cv2.rectangle(img, (int(a), int(b)), (int(c), int(d)), light, -1, cv2.LINE_AA)
    (a, b), (c, d) = p(-0.9, 0.36), p(0.9, 0.25)
    cv2.rectangle(img, (int(a), int(b)), (int(c), int(d)), dark, -1)  # bumper


def _paste_plate(img: np.ndarray, plate: np.ndarray, dst: np.ndarray, wash: bool) -> None:
    h, w = plate.shape[:2]
    x0, y0 = np.floor(dst.min(0)).astype(int) - 1
    x1, y1 = np.ceil(dst.max(0)).astype(int) + 1
    H, W = img.shape[:2]
    bx0, by0, bx1, by1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
    if bx1 <= bx0 or by1 <= by0:
        return
    src = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float32)
    M = cv2.getPerspectiveTransform(src, (dst - np.array([bx0, by0], np.float32)).astype(np.float32))
    size = (bx1 - bx0, by1 - by0)
    # shrink the plate first when it is much larger than its place (area filter, no aliasing)
    scale = (dst[1, 0] - dst[0, 0]) / w
    if scale < 0.5:
        small = cv2.resize(plate, (max(int(w * scale * 2), 4), max(int(h * scale * 2), 2)),
                           interpolation=cv2.INTER_AREA)
        sh, sw = small.shape[:2]
        src = np.array([[0, 0], [sw - 1, 0], [sw - 1, sh - 1], [0, sh - 1]], np.float32)
        M = cv2.getPerspectiveTransform(src, (dst - np.array([bx0, by0], np.float32)).astype(np.float32))
        plate = small
    warped = cv2.warpPerspective(plate, M, size, flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.full(plate.shape[:2], 255, np.uint8), M, size, flags=cv2.INTER_LINEAR)
    roi = img[by0:by1, bx0:bx1]
    a = mask.astype(np.float32)[..., None] / 255
    if wash:
        warped = cv2.addWeighted(warped, 0.15, np.full_like(warped, 250), 0.85, 0)
    roi[:] = (warped * a + roi * (1 - a)).astype(np.uint8)


def _in(t: float, spans: list[tuple[float, float]]) -> bool:
    return any(a <= t <= b for a, b in spans)


def render_frame(scene: Scene, index: int, rng: np.random.Generator) -> np.ndarray:
    t = index / scene.fps
    img = scene.background.copy()
    visible = [(v, v.z_at(t)) for v in scene.vehicles]
    visible = sorted(((v, z) for v, z in visible if z is not None), key=lambda vz: -vz[1])  # far first
    for v, z in visible:
        _draw_body(img, scene, v, z)
        rel = t - v.start_s
        corners = plate_corners(scene, v, z)
        _paste_plate(img, v.plate.image, corners, wash=_in(rel, v.glare_s))
        if _in(rel, v.hidden_s):  # something passes in front of the plate
            x0, y0 = corners.min(0)
            x1, y1 = corners.max(0)
            m = (x1 - x0) * 0.3
            cv2.rectangle(img, (int(x0 - m), int(y0 - m)), (int(x1 + m), int(y1 + m)), (70, 75, 80), -1)
    for px in scene.posts_x:
        x = int(px * scene.width)
        pw = max(int(scene.width * 0.018), 3)
        cv2.rectangle(img, (x, 0), (x + pw, scene.height), (90, 95, 100), -1)
        cv2.line(img, (x + pw // 3, 0), (x + pw // 3, scene.height), (140, 145, 150), 1)
    if index in scene.blur_frames:
        k = int(rng.integers(7, 13))
        kernel = np.zeros((k, k), np.float32)
        if rng.random() < 0.5:
            kernel[k // 2, :] = 1.0 / k
        else:
            kernel[:, k // 2] = 1.0 / k
        img = cv2.filter2D(img, -1, kernel)
    if scene.noise > 0:
        noise = rng.normal(0, scene.noise, img.shape).astype(np.int16)
        img = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    return img


def truth(scene: Scene) -> dict:
    """Ground truth: one entry per vehicle whose plate is in the frame and at least 20 px wide."""
    out = []
    n = frame_count(scene)
    for v in scene.vehicles:
        seen = []
        for i in range(n):
            z = v.z_at(i / scene.fps)
            if z is None:
                continue
            c = plate_corners(scene, v, z)
            if _covered(scene, v, z, c, i / scene.fps):
                continue
            inside = c[:, 0].min() >= 0 and c[:, 1].min() >= 0 and c[:, 0].max() < scene.width \
                and c[:, 1].max() < scene.height
            if inside and c[1, 0] - c[0, 0] >= 20:
                seen.append((i, c[1, 0] - c[0, 0]))
        if not seen:
            continue
        readable = sum(1 for _, pw in seen if pw >= READABLE_PX)
        grow = seen[-1][1] / seen[0][1]
        direction = "approaching" if grow > 1.1 else "receding" if grow < 1 / 1.1 else "unknown"
        out.append({"text": v.plate.text, "country": v.plate.country,
                    "formatted": format_plate(v.plate.text, v.plate.country),
                    "first_frame": seen[0][0], "last_frame": seen[-1][0], "frames": len(seen),
                    "readable_frames": readable,
                    "direction": direction, "parked": direction == "unknown" and len(seen) >= 0.9 * n})
    return {"fps": scene.fps, "width": scene.width, "height": scene.height, "frames": n, "vehicles": out}


def _covered(scene: Scene, v: Vehicle, z: float, c: np.ndarray, t: float) -> bool:
    """The plate is hidden by a nearer car's body."""
    px0, py0 = c.min(0)
    px1, py1 = c.max(0)
    for o in scene.vehicles:
        zo = o.z_at(t)
        if o is v or zo is None or zo >= z:
            continue
        x0, y0, x1, y1 = body_box(scene, o, zo)
        ix = max(0.0, min(px1, x1) - max(px0, x0))
        iy = max(0.0, min(py1, y1) - max(py0, y0))
        if ix * iy > 0.3 * (px1 - px0) * (py1 - py0):
            return True
    return False


def frame_count(scene: Scene) -> int:
    return int(round(scene.duration_s * scene.fps))


def write_video(scene: Scene, path: Path, seed: int = 0) -> dict:
    """Render `scene` to `path` (mp4v) and `path`.json; returns the ground truth."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), scene.fps, (scene.width, scene.height))
    if not writer.isOpened():
        raise RuntimeError(f"cannot open a video writer for {path}")
    try:
        for i in range(frame_count(scene)):
            writer.write(render_frame(scene, i, rng))
    finally:
        writer.release()
    gt = truth(scene)
    path.with_suffix(".json").write_text(json.dumps(gt, indent=1))
    return gt


# --- backgrounds ---------------------------------------------------------------------------------

UNLABELLED_PLATE_SCORE = 0.25  # detector score from which an unlabelled spot of a background is blurred


def plate_finder():
    """The committed plate detector, used to blur plates the background labels miss."""
    from edge.detector import PlateDetector

    # the close-up search stays off: the videos of a seed must not change with the serving options
    return PlateDetector(ROOT / "models" / "detector.onnx", threads=1, score_threshold=UNLABELLED_PLATE_SCORE,
                         close_up_scale=0.0)


def dashcam_background(index: int, width: int, height: int, finder=None) -> np.ndarray:
    """A real road frame (MIT dashcam set) with its plates blurred away, at width x height.

    The set's labels miss some plates (far or parked cars); a video whose background holds a
    readable plate would give a passage its truth does not list. So after the labelled plates,
    whatever the committed detector (`finder`, made here when None) still finds at
    UNLABELLED_PLATE_SCORE or more in the scaled frame is blurred too (a sign or lamp blurred by
    mistake costs nothing).
    """
    with open(DASHCAM / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    images = sorted({r["image"] for r in rows})
    name = images[index % len(images)]
    img = cv2.imread(str(DASHCAM / name))
    if img is None:
        raise FileNotFoundError(f"cannot read {DASHCAM / name}")
    for r in rows:
        if r["image"] == name:
            x0, y0, x1, y1 = (int(float(r[k])) for k in ("xmin", "ymin", "xmax", "ymax"))
            _blur_box(img, x0, y0, x1, y1, 6)
    h, w = img.shape[:2]
    s = max(width / w, height / h)
    img = cv2.resize(img, (int(math.ceil(w * s)), int(math.ceil(h * s))), interpolation=cv2.INTER_AREA)
    y = (img.shape[0] - height) // 2
    x = (img.shape[1] - width) // 2
    img = np.ascontiguousarray(img[y:y + height, x:x + width])
    finder = finder if finder is not None else plate_finder()
    for _ in range(2):  # a second pass: blurring one spot can leave a neighbour standing out
        found = finder.detect(img)
        for d in found:
            x0, y0, x1, y1 = (int(round(v)) for v in d.box)
            _blur_box(img, x0, y0, x1, y1, max(4, (x1 - x0) // 8))
        if not found:
            break
    return img


def _blur_box(img: np.ndarray, x0: int, y0: int, x1: int, y1: int, margin: int) -> None:
    """Blur a box (grown by margin, clipped to the image) in place."""
    H, W = img.shape[:2]
    x0, y0, x1, y1 = max(x0 - margin, 0), max(y0 - margin, 0), min(x1 + margin, W), min(y1 + margin, H)
    if x1 - x0 >= 2 and y1 - y0 >= 2:
        img[y0:y1, x0:x1] = cv2.blur(img[y0:y1, x0:x1], (31, 31))


def procedural_background(width: int, height: int, seed: int = 0, horizon: float = 0.36) -> np.ndarray:
    """A licence-clean road scene drawn from scratch: sky, trees, verges, a two-lane road, markings."""
    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.uint8)
    hy = int(height * horizon)
    sky = np.linspace(0, 1, hy)[:, None]
    img[:hy] = (np.array([235, 205, 170]) * (1 - sky) + np.array([225, 225, 215]) * sky)[:, None, :].astype(np.uint8)
    img[hy:] = (70, 125, 85)
    for _ in range(40):  # tree line
        x = int(rng.uniform(0, width))
        r = int(rng.uniform(0.02, 0.05) * width)
        g = (int(rng.integers(40, 70)), int(rng.integers(90, 130)), int(rng.integers(50, 80)))
        cv2.circle(img, (x, hy - r // 3), r, g, -1, cv2.LINE_AA)
    f = FOCAL * width
    vx = width / 2

    def pt(x_m, z):
        return int(vx + f * x_m / z), int(hy + f * CAM_H_M / z)

    zs = (200.0, 3.0)
    road = np.array([pt(-4.2, zs[0]), pt(4.2, zs[0]), pt(4.2, zs[1]), pt(-4.2, zs[1])], np.int32)
    cv2.fillConvexPoly(img, road, (95, 95, 98), cv2.LINE_AA)
    noise = rng.normal(0, 6, (height - hy, width, 1))
    img[hy:] = np.clip(img[hy:].astype(np.float32) + noise, 0, 255).astype(np.uint8)
    for x_m in (-3.6, 3.6):
        cv2.line(img, pt(x_m, zs[0]), pt(x_m, zs[1]), (230, 230, 230), 2, cv2.LINE_AA)
    z = 3.0
    while z < 120:  # dashed centre line
        cv2.fillConvexPoly(img, np.array([pt(-0.08, z), pt(0.08, z), pt(0.08, z + 3), pt(-0.08, z + 3)], np.int32),
                           (235, 235, 235), cv2.LINE_AA)
        z += 9
    return img


# --- scenarios -----------------------------------------------------------------------------------

BODY_COLOURS = [(40, 40, 160), (180, 180, 185), (30, 30, 30), (200, 120, 40), (235, 235, 235), (60, 110, 60),
                (50, 60, 120), (120, 40, 40), (150, 150, 60)]


def _plate(rng: np.random.Generator, nl_share: float = 0.85) -> RenderedPlate:
    country = "NL" if rng.random() < nl_share else str(rng.choice(["DE", "BE", "FR"]))
    return render_plate(rng, country, layout="one_row")


def _drive(rng, approaching: bool, speed: float, z_near: float, z_far: float, stop: float = 0.0):
    """Distance over time: constant speed, optionally with a standstill of `stop` seconds halfway."""
    za, zb = (z_far, z_near) if approaching else (z_near, z_far)
    d = abs(zb - za)
    if stop <= 0:
        return [(0.0, za), (d / speed, zb)]
    zm = (za + zb) / 2
    t1 = d / 2 / speed
    return [(0.0, za), (t1, zm), (t1 + stop, zm), (t1 + stop + d / 2 / speed, zb)]


def make_scene(rng: np.random.Generator, background: np.ndarray, *, fps: float = 12.5, n_vehicles: int = 3,
               parked: bool = False, stop_and_go: bool = False, effects: bool = True, nl_share: float = 0.85) -> Scene:
    """A scene with vehicles one after another, some overlapping in time (two or more in view)."""
    h, w = background.shape[:2]
    vehicles = []
    t = 0.3
    for k in range(n_vehicles):
        approaching = bool(rng.random() < 0.5)
        speed = float(rng.uniform(5, 11))  # m/s (18-40 km/h: town traffic)
        stop = float(rng.uniform(1.5, 3.0)) if stop_and_go and k == 0 else 0.0
        lane = float(rng.uniform(-0.9, -0.3) if approaching else rng.uniform(0.3, 0.9))
        z_near = float(rng.uniform(5.5, 7.0))
        v = Vehicle(plate=_plate(rng, nl_share), start_s=t, lane_x=lane,
                    z_of_t=_drive(rng, approaching, speed, z_near, float(rng.uniform(24, 30)), stop),
                    body_bgr=BODY_COLOURS[int(rng.integers(len(BODY_COLOURS)))], front=approaching,
                    yaw=float(rng.uniform(-0.12, 0.12)))
        dur = v.z_of_t[-1][0]
        if effects and rng.random() < 0.5:
            a = float(rng.uniform(0.2, 0.7)) * dur
            (v.hidden_s if rng.random() < 0.5 else v.glare_s).append((a, a + float(rng.uniform(0.1, 0.35))))
        vehicles.append(v)
        # next vehicle: sometimes while this one is still in view (two at once), sometimes after a gap
        t += dur * float(rng.uniform(0.35, 0.8)) if rng.random() < 0.5 else dur + float(rng.uniform(0.6, 2.0))
    if parked:
        vehicles.append(Vehicle(plate=_plate(rng, nl_share), start_s=0.0, lane_x=1.5,
                                z_of_t=[(0.0, 12.0), (t + 3.0, 12.0)], body_bgr=(90, 90, 90), front=True, yaw=0.15))
    duration = max(v.end_s for v in vehicles) + 0.8
    n = int(round(duration * fps))
    blur = set(rng.choice(n, size=max(1, n // 15), replace=False).tolist()) if effects else set()
    posts = [float(rng.uniform(0.15, 0.3))] if effects and rng.random() < 0.5 else []
    return Scene(width=w, height=h, fps=fps, duration_s=duration, background=background, vehicles=vehicles,
                 blur_frames=blur, posts_x=posts)


def build_suite(count: int, seed: int, width: int = 640, height: int = 480) -> list[Scene]:
    """`count` scenes that together cover every case of issue 5 (single, two at once, stop-and-go, parked)."""
    rng = np.random.default_rng(seed)
    finder = plate_finder()
    scenes = []
    for i in range(count):
        bg = dashcam_background(int(rng.integers(0, 10_000)), width, height, finder)
        kind = i % 4
        scenes.append(make_scene(rng, bg, n_vehicles=int(rng.integers(2, 5)), parked=kind == 3,
                                 stop_and_go=kind == 2))
    return scenes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for the .mp4 and .json files")
    ap.add_argument("--count", type=int, default=12, help="number of videos")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--size", default="640x480", help="WIDTHxHEIGHT, e.g. 640x480 or 1920x1080")
    args = ap.parse_args(argv)
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        ap.error(f"--size must look like 640x480, got {args.size!r}")
    total = 0
    for i, scene in enumerate(build_suite(args.count, args.seed, width, height)):
        path = args.out / f"passages_{args.seed}_{i:02d}.mp4"
        gt = write_video(scene, path, seed=args.seed * 1000 + i)
        total += len(gt["vehicles"])
        print(f"{path}: {gt['frames']} frames, {len(gt['vehicles'])} vehicles")
    print(f"{args.count} videos, {total} vehicles")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
