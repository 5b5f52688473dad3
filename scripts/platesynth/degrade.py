"""Camera damage for rendered plates: pose, crop error, blur, light, noise, dirt, compression.

`degrade` turns a clean plate into what the recognizer is given at the roadside: a small crop
(50-200 px wide) either rectified from slightly wrong detector corners or cut as an axis-aligned
box around a plate seen at an angle (as in the real crop sets), with the usual image damage.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Degraded:
    """A damaged crop and where the plate corners lie in it (TL, TR, BR, BL)."""

    image: np.ndarray  # BGR uint8
    corners: tuple[tuple[float, float], ...]


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Car paint, bumper plastic or shadow: a flat colour with texture and a gradient."""
    base = rng.integers(0, 256, 3).astype(np.float32) * rng.uniform(0.2, 1.0)
    bg = np.empty((h, w, 3), np.float32)
    bg[:] = base
    small = rng.normal(0, rng.uniform(2, 20), (max(h // 4, 1), max(w // 4, 1))).astype(np.float32)
    bg += cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)[..., None]
    g = np.linspace(rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.2), h, dtype=np.float32)
    bg *= g[:, None, None]
    return np.clip(bg, 0, 255)


def _surface_damage(rng: np.random.Generator, img: np.ndarray, s: float) -> np.ndarray:
    """Glare, dirt, shadow and partial occlusion on the plate itself (float32 BGR)."""
    h, w = img.shape[:2]
    out = img.astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if rng.random() < 0.25 * s:  # glare: a bright elliptical blob
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        rx, ry = rng.uniform(0.1, 0.5) * w, rng.uniform(0.2, 0.8) * h
        a = np.exp(-(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2)) * rng.uniform(0.3, 0.9)
        out = out * (1 - a[..., None]) + 255 * a[..., None]
    if rng.random() < 0.25 * s:  # dirt: brownish blotches
        blot = np.zeros((h, w), np.float32)
        for _ in range(int(rng.integers(3, 15))):
            cv2.circle(blot, (int(rng.uniform(0, w)), int(rng.uniform(0, h))),
                       int(rng.uniform(0.02, 0.12) * h + 1), float(rng.uniform(0.2, 0.7)), -1)
        blot = cv2.GaussianBlur(blot, (0, 0), max(h * 0.03, 0.5))
        dirt = np.array([40, 60, 80], np.float32) * rng.uniform(0.5, 1.5)
        out = out * (1 - blot[..., None]) + dirt * blot[..., None]
    if rng.random() < 0.2 * s:  # shadow edge across the plate
        x0 = rng.uniform(0.2, 0.8) * w
        slope = rng.uniform(-1.5, 1.5)
        side = (xx - x0 - slope * (yy - h / 2)) > 0
        out = np.where(side[..., None], out * rng.uniform(0.35, 0.75), out)
    if rng.random() < 0.1 * s:  # occlusion of an edge strip (tow bar, frame), never a whole character
        colour = rng.integers(0, 256, 3).astype(np.float32)
        if rng.random() < 0.5:
            y0 = int(h * rng.uniform(0.85, 0.95))
            out[y0:] = colour
        else:
            x0 = int(w * rng.uniform(0.0, 0.04))
            out[:, :x0 + 1] = colour
    return out


def degrade(
    rng: np.random.Generator,
    image: np.ndarray,
    corners=None,
    *,
    strength: float = 1.0,
    out_width: int | None = None,
    mode: str | None = None,
) -> Degraded:
    """Damage a clean plate image (BGR) whose plate corners are `corners` (default: image corners).

    mode "rectified": the crop the recognizer makes from noisy detector corners;
    mode "box": an axis-aligned box around the plate seen at an angle (real crop sets);
    None picks one at random. `strength` (0..1.5) scales how often and how hard damage is applied.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be BGR uint8 H x W x 3, got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    src = np.array(corners if corners is not None else ((0, 0), (w - 1, 0), (w - 1, h - 1), (0, h - 1)), np.float32)
    if src.shape != (4, 2):
        raise ValueError(f"corners must be 4 (x, y) points, got shape {src.shape}")
    s = float(strength)
    mode = mode or ("rectified" if rng.random() < 0.5 else "box")
    if mode not in ("rectified", "box"):
        raise ValueError(f"mode must be 'rectified' or 'box', got {mode!r}")

    plate = _surface_damage(rng, image, s)
    pw = float(np.linalg.norm(src[1] - src[0]))
    ph = float(np.linalg.norm(src[3] - src[0]))

    # pose: rotation, perspective (yaw/pitch), shear, in a canvas with room around the plate
    ang = np.deg2rad(rng.normal(0, 4 * s))
    yaw = rng.uniform(-0.25, 0.25) * s
    pitch = rng.uniform(-0.15, 0.15) * s
    shear = rng.normal(0, 0.06 * s)
    c = src.mean(0)
    q = src - c
    q[:, 0] += shear * q[:, 1]
    rows = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]], np.float32)
    q = q @ rows.T
    # perspective: shrink one side's height (yaw) and one edge's width (pitch)
    q[:, 1] *= 1 - yaw * np.sign(q[:, 0])
    q[:, 0] *= 1 - pitch * np.sign(q[:, 1])
    margin = 0.35 * max(pw, ph)
    dst = q - q.min(0) + margin
    cw, ch = int(dst[:, 0].max() + margin), int(dst[:, 1].max() + margin)
    H = cv2.getPerspectiveTransform(src, dst.astype(np.float32))
    bg = _background(rng, ch, cw)
    warped = cv2.warpPerspective(plate, H, (cw, ch), flags=cv2.INTER_LINEAR, borderValue=0)
    mask = cv2.warpPerspective(np.ones(image.shape[:2], np.float32), H, (cw, ch), flags=cv2.INTER_LINEAR)
    scene = warped * mask[..., None] + bg * (1 - mask[..., None])

    # the crop: what the recognizer gets
    target_w = out_width or int(np.exp(rng.uniform(np.log(50), np.log(200))))
    if mode == "rectified":
        jit = rng.normal(0, 0.025 * s, (4, 2)) * np.array([pw, ph]) + rng.normal(0, 0.015 * s, (1, 2)) * np.array([pw, ph])
        grow = rng.uniform(-0.02, 0.08)
        noisy = dst + jit.astype(np.float32)
        cen = noisy.mean(0)
        noisy = cen + (noisy - cen) * (1 + grow)
        aspect = pw / max(ph, 1)
        ow = target_w
        oh = max(int(round(ow / aspect)), 8)
        out_pts = np.array([[0, 0], [ow - 1, 0], [ow - 1, oh - 1], [0, oh - 1]], np.float32)
        R = cv2.getPerspectiveTransform(noisy.astype(np.float32), out_pts)
        # render at 3x and shrink with area averaging so small crops alias like a real sensor
        up = 3
        R_up = cv2.getPerspectiveTransform(noisy.astype(np.float32), out_pts * up)
        big = cv2.warpPerspective(scene, R_up, (ow * up, oh * up), flags=cv2.INTER_LINEAR)
        crop = cv2.resize(big, (ow, oh), interpolation=cv2.INTER_AREA)
        pts = cv2.perspectiveTransform(dst[None].astype(np.float32), R)[0]
    else:
        x0, y0 = dst.min(0)
        x1, y1 = dst.max(0)
        bw, bh = x1 - x0, y1 - y0
        m = rng.uniform(-0.03, 0.12, 4) * np.array([bw, bh, bw, bh])
        x0, y0 = max(int(x0 - m[0]), 0), max(int(y0 - m[1]), 0)
        x1, y1 = min(int(x1 + m[2]), cw), min(int(y1 + m[3]), ch)
        box = scene[y0:y1, x0:x1]
        oh = max(int(round(target_w * box.shape[0] / max(box.shape[1], 1))), 8)
        crop = cv2.resize(box, (target_w, oh), interpolation=cv2.INTER_AREA)
        k = target_w / max(box.shape[1], 1)
        pts = (dst - np.array([x0, y0], np.float32)) * np.array([k, oh / max(box.shape[0], 1)], np.float32)

    crop = _camera(rng, crop, s)
    return Degraded(crop, tuple((float(x), float(y)) for x, y in pts))


def _camera(rng: np.random.Generator, img: np.ndarray, s: float) -> np.ndarray:
    """Optics and sensor: blur, motion blur, light level, colour cast, IR grey, noise, JPEG."""
    out = img.astype(np.float32)
    size = min(img.shape[1] / 200.0, 1.0)  # small crops are already soft: blur them less
    if rng.random() < 0.4 * s:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.3, 0.5 + 0.8 * size))
    if rng.random() < 0.2 * s:
        k = int(rng.integers(3, 4 + int(4 * size)))
        kern = np.zeros((k, k), np.float32)
        kern[k // 2, :] = 1.0 / k
        M = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), float(rng.uniform(0, 180)), 1.0)
        kern = cv2.warpAffine(kern, M, (k, k))
        kern /= max(kern.sum(), 1e-6)
        out = cv2.filter2D(out, -1, kern)
    r = rng.random()
    if r < 0.2 * s:  # low light: dark, low contrast
        out = 255 * (out / 255) ** rng.uniform(1.3, 2.5) * rng.uniform(0.35, 0.8)
    elif r < 0.35 * s:  # overexposed
        out = out * rng.uniform(1.1, 1.6) + rng.uniform(0, 40)
    out = out * rng.uniform(0.75, 1.2, 3).astype(np.float32)[None, None, :] + rng.uniform(-25, 25)
    if rng.random() < 0.15 * s:  # IR camera: grey, yellow foil comes out light
        g = out[..., 2] * 0.6 + out[..., 1] * 0.3 + out[..., 0] * 0.1
        out = np.repeat(g[..., None], 3, axis=2)
    if rng.random() < 0.5 * s:
        out = out + rng.normal(0, rng.uniform(2, 12), out.shape).astype(np.float32)
    out = np.clip(out, 0, 255).astype(np.uint8)
    if rng.random() < 0.6 * s:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(20, 95))])
        out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return out
