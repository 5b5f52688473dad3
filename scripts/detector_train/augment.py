"""Turning cached frames into training crops: affine jitter, photometric damage, text negatives,
and (when the recognizer team's renderer is importable) Dutch plates warped over the real ones.

Every function takes an explicit numpy Generator so a run is reproducible from its seed.
"""

from __future__ import annotations

import string
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

PAD = 114
FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/truetype/liberation",
             "/usr/share/fonts/truetype/roboto", "/usr/share/fonts/truetype/open-sans")


def box_quads(boxes: np.ndarray) -> np.ndarray:
    """Axis-aligned boxes (N x 4) as corner quads (N x 4 x 2), order TL TR BR BL."""
    x1, y1, x2, y2 = boxes.T
    return np.stack([np.stack([x1, y1], 1), np.stack([x2, y1], 1),
                     np.stack([x2, y2], 1), np.stack([x1, y2], 1)], 1).astype(np.float32)


def affine_crop(img, quads, rng, out_hw, scale_range=(0.7, 1.5), max_rot=6.0, focus=0.8, ignore=None, rot_p=0.4,
                closeup_p=0.0, closeup_width=(0.45, 0.92), closeup_max_scale=2.0):
    """Random scale/rotation/translation into an out_hw canvas; plates cut by the border become ignore boxes,
    and `ignore` (M x 4 don't-care boxes of the frame, e.g. plates its labels lack) follow the same transform.
    A share `rot_p` of the crops is turned by up to `max_rot` degrees (a rolled camera).

    A share `closeup_p` of the crops with plates are close-ups: one plate scaled to a `closeup_width` share
    of the canvas width (scale at most `closeup_max_scale`, so small plates are not blown up into blur) and
    placed whole inside it. Ordinary crops keep a plate whole only when it is under about half the canvas,
    so a plate filling most of a letterboxed frame (a close photo, a gate camera) is otherwise never seen
    whole. 0 (the default) draws nothing extra, so earlier stages stay reproducible."""
    H, W = out_hw
    s = float(np.exp(rng.uniform(np.log(scale_range[0]), np.log(scale_range[1]))))
    a = float(rng.uniform(-max_rot, max_rot)) if rng.random() < rot_p else 0.0
    if closeup_p > 0 and len(quads) and rng.random() < closeup_p:
        q = quads[rng.integers(len(quads))]
        c = q.mean(0)
        pw, ph = float(np.ptp(q[:, 0])), float(np.ptp(q[:, 1]))
        s = min(float(rng.uniform(*closeup_width)) * W / max(pw, 1.0), closeup_max_scale)
        # room for the turned plate: its half extent after scale (and a turn of up to |a| degrees)
        rad = np.deg2rad(abs(a))
        hx = 0.5 * s * (pw * np.cos(rad) + ph * np.sin(rad)) + 2
        hy = 0.5 * s * (pw * np.sin(rad) + ph * np.cos(rad)) + 2
        tx = rng.uniform(min(hx, W / 2), max(W - hx, W / 2))
        ty = rng.uniform(min(hy, H / 2), max(H - hy, H / 2))
    elif len(quads) and rng.random() < focus:
        q = quads[rng.integers(len(quads))]
        c = q.mean(0)
        tx, ty = rng.uniform(0.15 * W, 0.85 * W), rng.uniform(0.15 * H, 0.85 * H)
    else:
        c = np.array([img.shape[1] / 2, img.shape[0] / 2])
        tx = W / 2 + rng.uniform(-0.3, 0.3) * W
        ty = H / 2 + rng.uniform(-0.3, 0.3) * H
    M = cv2.getRotationMatrix2D((float(c[0]), float(c[1])), a, s)
    M[0, 2] += tx - c[0]
    M[1, 2] += ty - c[1]
    out = cv2.warpAffine(img, M, (W, H), flags=cv2.INTER_LINEAR, borderValue=(PAD, PAD, PAD))
    dont_care = []
    if ignore is not None and len(ignore):
        for qq in box_quads(np.asarray(ignore, np.float32)) @ M[:, :2].T + M[:, 2]:
            x1, y1 = qq.min(0)
            x2, y2 = qq.max(0)
            if x2 > 0 and y2 > 0 and x1 < W and y1 < H:
                dont_care.append([x1, y1, x2, y2])
    if not len(quads):
        return out, np.zeros((0, 4, 2), np.float32), np.asarray(dont_care, np.float32).reshape(-1, 4)
    q = quads @ M[:, :2].T + M[:, 2]
    keep, ignore = [], dont_care
    for qq in q:
        x1, y1 = qq.min(0)
        x2, y2 = qq.max(0)
        area = max((x2 - x1) * (y2 - y1), 1e-6)
        cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, W), min(y2, H)
        vis = max(cx2 - cx1, 0) * max(cy2 - cy1, 0) / area
        if vis >= 0.999:
            keep.append(qq)
        elif vis > 0:
            ignore.append([x1, y1, x2, y2])
    return out, np.asarray(keep, np.float32).reshape(-1, 4, 2), np.asarray(ignore, np.float32).reshape(-1, 4)


def hflip(img, quads, ignore):
    W = img.shape[1]
    img = img[:, ::-1].copy()
    q = quads.copy()
    q[..., 0] = W - q[..., 0]
    q = q[:, [1, 0, 3, 2]]
    ig = ignore.copy()
    if len(ig):
        ig[:, [0, 2]] = W - ignore[:, [2, 0]]
    return img, q, ig


def photometric(img, rng):
    """Day/night/colour-cast/blur/noise/JPEG damage of the kind roadside cameras produce."""
    img = img.astype(np.float32)
    if rng.random() < 0.8:
        img = img * rng.uniform(0.6, 1.4) + rng.uniform(-30, 30)
        img = img * rng.uniform(0.85, 1.15, size=3)  # colour cast
    if rng.random() < 0.15:  # night: dark, contrasty, noisy
        img = 255 * (np.clip(img, 0, 255) / 255) ** rng.uniform(1.5, 2.5) * rng.uniform(0.5, 1.0)
    if rng.random() < 0.1:
        g = img.mean(2, keepdims=True)
        img = np.repeat(g, 3, 2)
    if rng.random() < 0.3:
        img = img + rng.normal(0, rng.uniform(2, 10), img.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    r = rng.random()
    if r < 0.12:
        k = int(rng.integers(3, 9))
        ker = np.zeros((k, k), np.float32)
        ang = rng.uniform(0, np.pi)
        c = (k - 1) / 2
        for t in np.linspace(-c, c, 2 * k):
            ker[int(round(c + t * np.sin(ang))), int(round(c + t * np.cos(ang)))] = 1
        img = cv2.filter2D(img, -1, ker / ker.sum())
    elif r < 0.25:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.5))
    if rng.random() < 0.25:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(25, 80))])
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return img


class TextPainter:
    """Draws text that is not a plate (signs, timestamps, shop fronts, long lines) as hard negatives."""

    def __init__(self):
        self.fonts = sorted(str(p) for d in FONT_DIRS for p in Path(d).glob("*.ttf"))
        if not self.fonts:
            raise FileNotFoundError(f"no TrueType fonts found under {FONT_DIRS}")
        self._cache: dict[tuple[str, int], ImageFont.FreeTypeFont] = {}

    def _font(self, path: str, size: int):
        key = (path, size)
        if key not in self._cache:
            self._cache[key] = ImageFont.truetype(path, size)
        return self._cache[key]

    def _text(self, rng) -> str:
        kind = rng.integers(4)
        if kind == 0:  # timestamp overlay
            return f"20{rng.integers(10, 30)}-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d} {rng.integers(24):02d}:{rng.integers(60):02d}:{rng.integers(60):02d}"
        if kind == 1:  # words
            n = int(rng.integers(1, 4))
            return " ".join("".join(rng.choice(list(string.ascii_letters), int(rng.integers(3, 10)))) for _ in range(n))
        if kind == 2:  # long upper-case line
            return "".join(rng.choice(list(string.ascii_uppercase + "  "), int(rng.integers(10, 24))))
        return " ".join(str(rng.integers(1, 999)) for _ in range(int(rng.integers(1, 4))))

    def paint(self, img: np.ndarray, rng, avoid: np.ndarray, n: int, badge_p: float = 0.0) -> np.ndarray:
        """Paint n text items on img (BGR) away from the plate boxes in avoid (N x 4); a share badge_p
        of them are car badges (chrome or dark lettering, often in an oval), the commonest false plate."""
        H, W = img.shape[:2]
        pil = Image.fromarray(img[:, :, ::-1])
        draw = ImageDraw.Draw(pil)
        for _ in range(n):
            if badge_p > 0 and rng.random() < badge_p:
                self._badge(draw, rng, W, H, avoid)
                continue
            size = int(rng.integers(8, 40))
            font = self._font(self.fonts[int(rng.integers(len(self.fonts)))], size)
            text = self._text(rng)
            if rng.random() < 0.3:
                text = text + "\n" + self._text(rng)
            l, t, r, b = draw.multiline_textbbox((0, 0), text, font=font)
            tw, th = r - l, b - t
            if tw >= W or th >= H:
                continue
            for _try in range(5):
                x, y = int(rng.integers(0, W - tw)), int(rng.integers(0, H - th))
                if not len(avoid) or not _overlaps(avoid, (x - 4, y - 4, x + tw + 4, y + th + 4)):
                    break
            else:
                continue
            fg = tuple(int(v) for v in rng.integers(0, 256, 3))
            if rng.random() < 0.5:
                bg = tuple(int(v) for v in rng.integers(0, 256, 3))
                m = int(rng.integers(1, 8))
                draw.rectangle((x - m, y - m, x + tw + m, y + th + m), fill=bg)
            draw.multiline_text((x - l, y - t), text, font=font, fill=fg)
        return np.asarray(pil)[:, :, ::-1].copy()

    def _badge(self, draw: ImageDraw.ImageDraw, rng, W: int, H: int, avoid: np.ndarray) -> None:
        """A maker or model badge: a short word in chrome (light fill, dark rim) or dark lettering,
        sometimes inside an oval, sometimes an oval emblem alone; 3-12 % of the crop wide."""
        word = "".join(rng.choice(list(string.ascii_uppercase if rng.random() < 0.6 else string.ascii_letters),
                                  int(rng.integers(2, 8))))
        if rng.random() < 0.3:
            word += str(int(rng.integers(1, 999)))
        size = int(rng.integers(7, 30))
        font = self._font(self.fonts[int(rng.integers(len(self.fonts)))], size)
        l, t, r, b = draw.textbbox((0, 0), word, font=font)
        tw, th = r - l, b - t
        oval = rng.random() < 0.4
        ow, oh = (int(tw * rng.uniform(1.2, 1.6)), int(th * rng.uniform(1.8, 2.6))) if oval else (tw, th)
        if ow + 8 >= W or oh + 8 >= H:
            return
        for _try in range(5):
            x, y = int(rng.integers(4, W - ow - 4)), int(rng.integers(4, H - oh - 4))
            if not len(avoid) or not _overlaps(avoid, (x - 4, y - 4, x + ow + 4, y + oh + 4)):
                break
        else:
            return
        chrome = rng.random() < 0.6
        light = int(rng.integers(170, 250))
        dark = int(rng.integers(10, 80))
        fill = (light,) * 3 if chrome else (dark,) * 3
        rim = (dark,) * 3 if chrome else (light,) * 3
        if oval:
            inner = tuple(int(v) for v in rng.integers(0, 256, 3)) if rng.random() < 0.5 else None
            draw.ellipse((x, y, x + ow, y + oh), fill=inner, outline=fill, width=max(1, oh // 10))
            if rng.random() < 0.25:
                return  # an emblem without lettering
            x, y = x + (ow - tw) // 2, y + (oh - th) // 2
        draw.text((x - l, y - t), word, font=font, fill=fill, stroke_width=max(1, size // 12), stroke_fill=rim)


def _overlaps(boxes: np.ndarray, b) -> bool:
    x1, y1, x2, y2 = b
    return bool(np.any((boxes[:, 0] < x2) & (boxes[:, 2] > x1) & (boxes[:, 1] < y2) & (boxes[:, 3] > y1)))


def warp_plate(canvas: np.ndarray, plate: np.ndarray, quad: np.ndarray, rng) -> np.ndarray:
    """Paste plate (BGR) into canvas so its corners land on quad (TL TR BR BL), with soft edges."""
    ph, pw = plate.shape[:2]
    src = np.float32([[0, 0], [pw, 0], [pw, ph], [0, ph]])
    M = cv2.getPerspectiveTransform(src, quad.astype(np.float32))
    H, W = canvas.shape[:2]
    x1, y1 = np.floor(quad.min(0)).astype(int) - 2
    x2, y2 = np.ceil(quad.max(0)).astype(int) + 2
    x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, W), min(y2, H)
    if x2 <= x1 or y2 <= y1:
        return canvas
    T = np.array([[1, 0, -x1], [0, 1, -y1], [0, 0, 1]], np.float64) @ M
    # downscale first when the plate shrinks a lot, so the warp does not alias
    scale = (x2 - x1) / pw
    if scale < 0.5:
        k = max(scale * 1.5, 0.05)
        small = cv2.resize(plate, (max(int(pw * k), 4), max(int(ph * k), 2)), interpolation=cv2.INTER_AREA)
        S = np.diag([pw / small.shape[1], ph / small.shape[0], 1.0])
        T = T @ S
        plate = small
    patch = cv2.warpPerspective(plate, T, (x2 - x1, y2 - y1), flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.full(plate.shape[:2], 255, np.uint8), T, (x2 - x1, y2 - y1), flags=cv2.INTER_LINEAR)
    m = (mask.astype(np.float32) / 255)[..., None]
    region = canvas[y1:y2, x1:x2].astype(np.float32)
    canvas[y1:y2, x1:x2] = (patch * m + region * (1 - m)).astype(np.uint8)
    return canvas


def jitter_quad(box, rng, amount: float) -> np.ndarray:
    """A perspective quad inside box (x1 y1 x2 y2): corners pulled in by up to amount of the size."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    q = np.float32([[x1, y1], [x2, y1], [x2, y2], [x1, y2]])
    d = rng.uniform(0, amount, size=(4, 2)) * np.float32([w * 0.5, h])
    sign = np.float32([[1, 1], [-1, 1], [-1, -1], [1, -1]])
    # keep the pull consistent per side so the result is a plausible oblique view, not a bow-tie
    if rng.random() < 0.5:
        d[:, 0] = d[:, 0] * 0.3
    return q + sign * d


def cover_quad(box, rng, amount: float) -> np.ndarray:
    """A perspective quad around box (x1 y1 x2 y2): corners pushed out by up to amount of the size.

    Replacing a real plate with a rendered one must hide the real plate completely; a quad inside
    the box left a rim of the old plate around the new one, which blurred where the plate ends
    (corner targets) in training and in the nl_synth check.
    """
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    q = np.float32([[x1, y1], [x2, y1], [x2, y2], [x1, y2]])
    d = rng.uniform(0, amount, size=(4, 2)) * np.float32([w * 0.5, h])
    sign = np.float32([[1, 1], [-1, 1], [-1, -1], [1, -1]])
    if rng.random() < 0.5:
        d[:, 0] = d[:, 0] * 0.3
    d[:, 0] += 0.02 * w  # always a margin: box labels are not pixel-exact
    d[:, 1] += 0.04 * h
    return q - sign * d


def random_background(rng, hw) -> np.ndarray:
    """A rendered scene stand-in: gradients, blobs and bars, so plates on plain art are found too."""
    H, W = hw
    base = np.zeros((H, W, 3), np.float32)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = np.linspace(0, 1, H if rng.random() < 0.5 else W)
    g = (c0[None] * (1 - t[:, None]) + c1[None] * t[:, None])
    base[:] = g[:, None, :] if len(t) == H else g[None, :, :]
    for _ in range(int(rng.integers(3, 12))):
        col = tuple(float(v) for v in rng.uniform(0, 255, 3))
        x, y = int(rng.integers(0, W)), int(rng.integers(0, H))
        if rng.random() < 0.5:
            cv2.rectangle(base, (x, y), (x + int(rng.integers(10, W // 2)), y + int(rng.integers(10, H // 2))), col, -1)
        else:
            cv2.circle(base, (x, y), int(rng.integers(5, H // 3)), col, -1)
    base += rng.normal(0, rng.uniform(1, 12), base.shape)
    return np.clip(base, 0, 255).astype(np.uint8)
