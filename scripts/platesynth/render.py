"""Draw clean, frontal licence plates: colours, EU strip with stars, one- and two-row layouts.

Glyphs come from condensed bold fonts of Debian font packages (no free copy of the Dutch
anti-fraud typeface exists), mixed so a model does not learn one font. Output is BGR uint8,
the image is the plate itself, so its corners are the image corners.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .texts import PlateText, random_nl_text, random_text

_FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSansNarrow-Bold.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Bold.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationMono-Bold.ttf",
    "/usr/share/fonts/opentype/urw-base35/NimbusSansNarrow-Bold.otf",
    "/usr/share/fonts/opentype/urw-base35/NimbusSansNarrow-Regular.otf",
    "/usr/share/fonts/opentype/urw-base35/NimbusSans-Bold.otf",
    "/usr/share/fonts/truetype/roboto/unhinted/RobotoCondensed-Bold.ttf",
    "/usr/share/fonts/truetype/roboto/unhinted/RobotoCondensed-Medium.ttf",
    "/usr/share/fonts/truetype/roboto/unhinted/RobotoCondensed-Regular.ttf",
    "/usr/share/fonts/truetype/open-sans/OpenSans-CondBold.ttf",
    "/usr/share/fonts/truetype/open-sans/OpenSans-Semibold.ttf",
)
FONTS: tuple[str, ...] = tuple(p for p in _FONT_CANDIDATES if Path(p).is_file())
_GLYPH_SIZE = 96

RGB = tuple[int, int, int]
EU_BLUE: RGB = (0, 51, 153)
STAR_YELLOW: RGB = (255, 204, 0)


@dataclass(frozen=True)
class Style:
    """Colours and furniture of one plate type."""

    name: str
    bg: RGB
    fg: RGB
    strip: str = ""  # EU strip code ("NL", "D", ...); "" = no strip
    right_strip: RGB | None = None  # FR/IT/PT coloured strip on the right
    border: bool = True


@dataclass(frozen=True)
class RenderedPlate:
    """A clean frontal plate. `text` is the label: top row then bottom row, A-Z0-9 only."""

    image: np.ndarray  # BGR uint8
    text: str
    country: str
    layout: str  # "one_row" | "two_row"
    corners: tuple[tuple[float, float], ...]  # TL, TR, BR, BL in image pixels
    printed: str = ""
    style: str = ""
    sidecode: int | None = None
    rows: tuple[str, ...] = field(default=())


_WHITE, _BLACK = (240, 240, 236), (18, 18, 18)
_STRIP = {"DE": "D", "BE": "B", "FR": "F", "ES": "E", "IT": "I", "PL": "PL", "CZ": "CZ", "SK": "SK",
          "RO": "RO", "AT": "A", "DK": "DK", "SE": "S", "NO": "N", "GB": "GB", "GR": "GR", "BG": "BG",
          "LT": "LT", "LV": "LV", "HU": "H", "PT": "P", "IE": "IRL", "FI": "FIN", "SI": "SLO"}


def _style(rng: np.random.Generator, pt: PlateText) -> Style:
    c, r = pt.country, rng.random()
    if c == "NL":
        old = (pt.sidecode or 0) <= 3
        if old and r < 0.3:
            return Style("nl_blue", (28, 48, 112), (236, 236, 236), border=True)
        if old and r < 0.5:
            return Style("nl_black", (22, 22, 22), (220, 220, 215))
        if r < 0.06:
            return Style("nl_taxi", (120, 190, 235), _BLACK, "NL")
        if r < 0.10:
            return Style("nl_trade", (150, 212, 150), _BLACK, "NL")
        if r < 0.13:
            return Style("nl_white", _WHITE, _BLACK, "NL")
        strip = "NL" if ((pt.sidecode or 0) >= 6 or rng.random() < 0.6) else ""
        return Style("nl_yellow", (247, 196, 0), _BLACK, strip)
    if c == "BE":
        return Style("be", _WHITE, (160, 20, 35), "B")
    if c in ("FR", "IT"):
        return Style(c.lower(), _WHITE, _BLACK, _STRIP[c], EU_BLUE)
    if c == "PT":
        return Style("pt", _WHITE, _BLACK, "P", (250, 200, 0))
    if c == "GB" and r < 0.5:
        return Style("gb_rear", (247, 200, 0), _BLACK, "GB" if rng.random() < 0.5 else "")
    if c == "CH":
        return Style("ch", _WHITE, _BLACK, "")
    if c == "EU":
        bg, fg = [(_WHITE, _BLACK), ((245, 200, 10), _BLACK), ((20, 20, 20), (230, 230, 230)),
                  ((30, 60, 140), (240, 240, 240))][int(rng.choice(4, p=[0.7, 0.15, 0.1, 0.05]))]
        codes = list(_STRIP.values()) + ["NL", "EST", "M", "L", "LT", "HR", "CY", "IS", ""]
        return Style("eu", bg, fg, str(rng.choice(codes)))
    return Style(c.lower(), _WHITE, _BLACK, _STRIP.get(c, ""))


@lru_cache(maxsize=64)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


@lru_cache(maxsize=8192)
def _glyph(path: str, ch: str) -> np.ndarray:
    """Mask of one character at the full line height, so glyphs of a row share a baseline."""
    font = _font(path, _GLYPH_SIZE)
    ascent, descent = font.getmetrics()
    left, _, right, _ = font.getbbox(ch)
    w = max(int(right - left), 1)
    img = Image.new("L", (w, ascent + descent), 0)
    ImageDraw.Draw(img).text((-left, 0), ch, font=font, fill=255)
    return np.asarray(img)


def _row_mask(rng: np.random.Generator, row: str, font: str, spacing: float) -> tuple[np.ndarray, list[tuple[str, int, int]]]:
    """A row of text as one mask cropped to its ink rows, and the x-span of every character."""
    h = _glyph(font, "H").shape[0]
    gap = max(int(h * spacing), 1)
    parts, spans, x = [], [], 0
    for ch in row:
        if ch == " ":
            g = np.zeros((h, int(h * rng.uniform(0.18, 0.35))), np.uint8)
        elif ch == "#":  # room for an emblem, drawn later by _emblem
            g = np.zeros((h, int(h * rng.uniform(0.55, 0.8))), np.uint8)
        else:
            g = _glyph(font, ch)
        if parts:
            parts.append(np.zeros((h, gap), np.uint8))
            x += gap
        spans.append((ch, x, x + g.shape[1]))
        parts.append(g)
        x += g.shape[1]
    mask = np.hstack(parts)
    ink = np.where(mask.max(axis=1) > 40)[0]
    if len(ink):
        mask = mask[ink[0]: ink[-1] + 1]
    return mask, spans


def _paint(canvas: np.ndarray, mask: np.ndarray, x: int, y: int, colour: RGB) -> None:
    """Blend `colour` into `canvas` through `mask` at (x, y), clipped to the canvas."""
    H, W = canvas.shape[:2]
    h, w = mask.shape
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if x1 <= x0 or y1 <= y0:
        return
    a = (mask[y0 - y: y1 - y, x0 - x: x1 - x].astype(np.float32) / 255.0)[..., None]
    region = canvas[y0:y1, x0:x1]
    region[:] = region * (1 - a) + np.array(colour, np.float32) * a


def _stars(canvas: np.ndarray, cx: float, cy: float, radius: float) -> None:
    size = max(radius * 0.22, 1.0)
    for k in range(12):
        ang = 2 * np.pi * k / 12
        sx, sy = cx + radius * np.cos(ang), cy + radius * np.sin(ang)
        pts = []
        for j in range(10):
            rr = size if j % 2 == 0 else size * 0.45
            a = -np.pi / 2 + j * np.pi / 5
            pts.append((sx + rr * np.cos(a), sy + rr * np.sin(a)))
        cv2.fillPoly(canvas, [np.round(np.array(pts) * 4).astype(np.int32)], STAR_YELLOW, cv2.LINE_AA, shift=2)


def _emblem(rng: np.random.Generator, canvas: np.ndarray, x0: int, x1: int, cy: float, size: float) -> None:
    """A crest, seal, sticker or flag where '#' left room: furniture a reader must learn to skip."""
    w = max(x1 - x0, 2)
    cx = (x0 + x1) / 2
    col = tuple(int(v) for v in rng.integers(0, 256, 3))
    dark = (30, 30, 30)
    kind = rng.integers(4)
    r = min(w * 0.45, size * 0.45)
    if kind == 0:  # shield
        pts = np.array([[cx - r, cy - r], [cx + r, cy - r], [cx + r, cy + r * 0.2], [cx, cy + r * 1.1],
                        [cx - r, cy + r * 0.2]])
        cv2.fillPoly(canvas, [np.round(pts).astype(np.int32)], col, cv2.LINE_AA)
        if rng.random() < 0.7:
            half = pts.copy()
            half[:, 0] = np.minimum(half[:, 0], cx)
            cv2.fillPoly(canvas, [np.round(half).astype(np.int32)], tuple(int(v) for v in rng.integers(0, 256, 3)))
        cv2.polylines(canvas, [np.round(pts).astype(np.int32)], True, dark, max(int(r * 0.08), 1), cv2.LINE_AA)
    elif kind == 1:  # round seal / inspection sticker
        cv2.circle(canvas, (int(cx), int(cy)), max(int(r), 1), col, -1, cv2.LINE_AA)
        cv2.circle(canvas, (int(cx), int(cy)), max(int(r * 0.6), 1), tuple(int(v) for v in rng.integers(0, 256, 3)),
                   max(int(r * 0.15), 1), cv2.LINE_AA)
    elif kind == 2:  # flag-like stripes
        n = int(rng.integers(2, 4))
        for i in range(n):
            y0 = cy - r + 2 * r * i / n
            cv2.rectangle(canvas, (int(cx - r), int(y0)), (int(cx + r), int(y0 + 2 * r / n)),
                          tuple(int(v) for v in rng.integers(0, 256, 3)), -1)
    else:  # square sticker with a dark frame
        cv2.rectangle(canvas, (int(cx - r), int(cy - r * 0.8)), (int(cx + r), int(cy + r * 0.8)), col, -1)
        cv2.rectangle(canvas, (int(cx - r), int(cy - r * 0.8)), (int(cx + r), int(cy + r * 0.8)), dark,
                      max(int(r * 0.1), 1))


def _shield_pts(cx: float, cy: float, r: float) -> np.ndarray:
    return np.array([[cx - r * 0.8, cy - r], [cx + r * 0.8, cy - r], [cx + r * 0.8, cy + r * 0.25],
                     [cx, cy + r * 1.05], [cx - r * 0.8, cy + r * 0.25]])


def _crest(rng: np.random.Generator, canvas: np.ndarray, x0: int, x1: int, cy: float, size: float, kind: str) -> None:
    """The furniture a country prints next to the characters (never part of the text).

    kind: "at" state coat of arms (shield, often red-white-red, with a figure), "vienna" Vienna's (a
    white cross right across a red shield; Vienna plates are the most common Austrian ones), "ch" the Swiss
    shield, "canton" a cantonal shield, "it" the province box (yellow circle over a small
    province code), "de" the two round seals stacked (registration seal over the inspection sticker).
    """
    w = max(x1 - x0, 2)
    cx = (x0 + x1) / 2
    r = min(w * 0.5, size * 0.5)
    dark = (30, 30, 30)
    red, white = (200, 25, 35), (240, 240, 240)
    colours = [red, white, (30, 120, 50), (245, 200, 20), (20, 20, 20), (30, 70, 160)]
    if kind == "it":
        bw, bh = r * 1.4, size * 1.0
        cv2.rectangle(canvas, (int(cx - bw / 2), int(cy - bh / 2)), (int(cx + bw / 2), int(cy + bh / 2)), EU_BLUE, -1)
        cv2.circle(canvas, (int(cx), int(cy - bh * 0.2)), max(int(bw * 0.3), 1), STAR_YELLOW, max(int(bw * 0.08), 1),
                   cv2.LINE_AA)
        code = "".join(rng.choice(list("ABCDEFGHIKLMNOPRSTUVZ"), 2))
        m, _ = _row_mask(rng, code, FONTS[int(rng.integers(len(FONTS)))], 0.05)
        ch = max(int(bh * 0.3), 1)
        cw = max(int(min(m.shape[1] * ch / m.shape[0], bw * 0.9)), 1)
        _paint(canvas, cv2.resize(m, (cw, ch), interpolation=cv2.INTER_AREA), int(cx - cw / 2), int(cy + bh * 0.12),
               (240, 240, 240))
        return
    if kind == "de":
        rr = max(int(r * 0.55), 1)
        for dy in (-0.3, 0.3):
            cv2.circle(canvas, (int(cx), int(cy + dy * size)), rr, tuple(int(v) for v in rng.integers(60, 230, 3)), -1,
                       cv2.LINE_AA)
            cv2.circle(canvas, (int(cx), int(cy + dy * size)), max(int(rr * 0.6), 1),
                       tuple(int(v) for v in rng.integers(0, 256, 3)), max(int(rr * 0.15), 1), cv2.LINE_AA)
        return
    pts = _shield_pts(cx, cy, r)
    ipts = np.round(pts * 4).astype(np.int32)
    if kind == "ch":
        cv2.fillPoly(canvas, [ipts], red, cv2.LINE_AA, shift=2)
        a, b = r * 0.45, r * 0.14
        cv2.rectangle(canvas, (int(cx - b), int(cy - a)), (int(cx + b), int(cy + a)), white, -1)
        cv2.rectangle(canvas, (int(cx - a), int(cy - b)), (int(cx + a), int(cy + b)), white, -1)
    else:
        k = int(rng.integers(4))
        c1, c2 = (colours[i] for i in rng.choice(len(colours), 2, replace=False))
        if kind in ("at", "vienna") and k == 0:  # red-white-red
            c1, c2 = red, white
        cv2.fillPoly(canvas, [ipts], c1, cv2.LINE_AA, shift=2)
        mask = np.zeros(canvas.shape[:2], np.uint8)
        cv2.fillPoly(mask, [ipts], 255, cv2.LINE_AA, shift=2)
        part = np.zeros_like(mask)
        if k in (0, 1):  # horizontal band
            cv2.rectangle(part, (int(cx - r), int(cy - r * 0.3)), (int(cx + r), int(cy + r * 0.3)), 255, -1)
        elif k == 2:  # vertical half
            cv2.rectangle(part, (int(cx), int(cy - r * 1.1)), (int(cx + r), int(cy + r * 1.1)), 255, -1)
        else:  # a figure (animal, eagle, tower: a blob with limbs)
            for _ in range(int(rng.integers(3, 7))):
                px, py = cx + rng.uniform(-0.4, 0.4) * r, cy + rng.uniform(-0.5, 0.5) * r
                cv2.ellipse(part, (int(px), int(py)), (max(int(r * rng.uniform(0.1, 0.3)), 1),
                            max(int(r * rng.uniform(0.05, 0.2)), 1)), float(rng.uniform(0, 180)), 0, 360, 255, -1)
        sel = (part > 0) & (mask > 0)
        canvas[sel] = c2
        crown = rng.random() < 0.4
        if kind == "vienna":  # Vienna's own arms: a white cross right across a red shield (same draws as "at")
            cv2.fillPoly(canvas, [ipts], red, cv2.LINE_AA, shift=2)
            bar = r * 0.17
            cross = np.zeros_like(mask)
            cv2.rectangle(cross, (int(cx - bar), int(cy - r * 1.1)), (int(cx + bar), int(cy + r * 1.1)), 255, -1)
            ybar = cy - r * 0.2
            cv2.rectangle(cross, (int(cx - r), int(ybar - bar)), (int(cx + r), int(ybar + bar)), 255, -1)
            canvas[(cross > 0) & (mask > 0)] = white
        elif crown:  # a crown or helmet on top
            cv2.rectangle(canvas, (int(cx - r * 0.5), int(cy - r * 1.25)), (int(cx + r * 0.5), int(cy - r * 0.95)),
                          (235, 190, 40), -1)
    cv2.polylines(canvas, [ipts], True, dark, max(int(r * 0.08), 1), cv2.LINE_AA, shift=2)


def _nor_flag(canvas: np.ndarray, cx: float, cy: float, w: float) -> None:
    """Norway's flag at the top of the left strip (Norwegian plates carry it instead of the stars)."""
    h = w * 0.73
    x0, y0 = cx - w / 2, cy - h / 2
    cv2.rectangle(canvas, (int(x0), int(y0)), (int(x0 + w), int(y0 + h)), (186, 12, 47), -1)
    for t, col in ((0.25, (240, 240, 240)), (0.12, (0, 32, 91))):
        cv2.rectangle(canvas, (int(x0 + w * (0.34 - t / 2)), int(y0)), (int(x0 + w * (0.34 + t / 2)), int(y0 + h)), col, -1)
        cv2.rectangle(canvas, (int(x0), int(y0 + h * (0.5 - t * 0.7))), (int(x0 + w), int(y0 + h * (0.5 + t * 0.7))), col, -1)


# furniture on the top row of two-row plates: (crest kind, "start" or "end" of the row)
_FURNITURE = {
    "AT": (("at", "end"),),
    "CH": (("ch", "start"), ("canton", "end")),
    "IT": (("it", "end"),),
    "DE": (("de", "end"),),
}


def _furnish(row: str, country: str, layout: str) -> tuple[str, list[str]]:
    """Add '#' room for the country's crests/seals/boxes to a plate's first row; returns the row and
    the crest kinds in the order of their '#'. AT: the arms after the district (the first separator)
    on both layouts, as on Vienna plates "W [arms] 1 / 518 B", else at the end of a two-row top row;
    one-row CH plates: shields at both ends (DE seals are drawn by render_plate); other two-row
    plates: on the top row."""
    if country == "AT" and " " in row:  # the state arms sit between the district and the number
        i = row.index(" ")
        return row[:i] + " # " + row[i + 1:], ["vienna" if row[:i] == "W" else "at"]
    if layout == "one_row":
        if country == "CH":
            return "# " + row + " #", ["ch", "canton"]
        return row, []
    kinds: list[str] = []
    for kind, where in _FURNITURE.get(country, ()):
        if kind == "at" and row == "W":
            kind = "vienna"
        if where == "start":
            row, kinds = "# " + row, [kind] + kinds
        else:
            row, kinds = row + " #", kinds + [kind]
    return row, kinds


def _with_emblem(rng: np.random.Generator, row: str, two_row_top: bool) -> str:
    """Put an emblem placeholder '#' at a separator, or at the end of a two-row plate's top row."""
    seps = [i for i, c in enumerate(row) if c in " -"]
    r = rng.random()
    if two_row_top and r < 0.5:
        return row + " #" if rng.random() < 0.7 else "# " + row
    if seps:
        i = int(rng.choice(seps))
        return row[:i] + " # " + row[i + 1:]
    return row + " #"


def _split_rows(rng: np.random.Generator, pt: PlateText) -> tuple[str, str]:
    """Split a printed text into a top and a bottom row, preferring a separator boundary."""
    printed = pt.printed
    n = len(pt.text)
    if pt.country == "AT" and " " in printed and rng.random() < 0.5:
        district, number = printed.split(" ", 1)  # e.g. "W 1 / 518 B": the top row starts the number
        k = int(rng.integers(1, 3))
        return f"{district} {number[:k]}".strip(), number[k:].strip()
    seps = [i for i, c in enumerate(printed) if c in " -"]
    cand = [i for i in seps if 1 <= len(printed[:i].replace("-", "").replace(" ", "")) <= (n + 1) // 2 + 1]
    if cand and rng.random() < 0.8:
        i = int(rng.choice(cand))
        top, bottom = printed[:i], printed[i + 1:]
    else:
        k = int(rng.integers(1, (n + 1) // 2 + 1))
        chars = 0
        for i, c in enumerate(printed):
            if c not in " -":
                chars += 1
            if chars == k:
                break
        top, bottom = printed[: i + 1], printed[i + 1:]
    return top.strip(" -"), bottom.strip(" -")


def render_plate(
    rng: np.random.Generator,
    country: str | None = None,
    *,
    text: PlateText | None = None,
    layout: str | None = None,
    scale: float = 1.0,
    font: str | None = None,
    emblem_p: float = 0.0,
    furniture_p: float = 0.0,
) -> RenderedPlate:
    """A clean frontal plate; one row is 520 x 110 mm, two rows 340 x 210 mm (at `scale` px per mm).

    `country` is an ISO code of platesynth.COUNTRIES ("EU" = generic), random when None.
    Dutch plates get the replacement-plate duplicate digit now and then (not part of the text);
    other plates get a crest, seal or sticker between groups with probability `emblem_p`, and
    AT/CH/IT/DE/NO plates their own printed furniture (crests, province box, seals, flag) with
    probability `furniture_p`.
    """
    if text is None:
        text = random_nl_text(rng) if country and country.upper() == "NL" else random_text(rng, country)
    if layout is None:
        layout = "two_row" if rng.random() < 0.4 else "one_row"
    if layout not in ("one_row", "two_row"):
        raise ValueError(f"layout must be 'one_row' or 'two_row', got {layout!r}")
    if not FONTS:
        raise RuntimeError("no fonts found: install fonts-dejavu / fonts-liberation")
    font = font or FONTS[int(rng.integers(len(FONTS)))]
    style = _style(rng, text)

    if layout == "one_row":
        wmm, hmm = rng.uniform(470, 530), rng.uniform(100, 120)
        rows = (text.printed,)
    else:
        wmm, hmm = rng.uniform(260, 350), rng.uniform(185, 225)
        rows = _split_rows(rng, text)
    W, H = max(int(wmm * scale), 16), max(int(hmm * scale), 8)
    jitter = rng.integers(-12, 13, size=3)
    bg = tuple(int(np.clip(v + j, 0, 255)) for v, j in zip(style.bg, jitter))
    canvas = np.empty((H, W, 3), np.float32)
    canvas[:] = bg
    # gentle shading across the plate (reflective foil is never perfectly flat)
    grad = np.linspace(rng.uniform(0.9, 1.0), rng.uniform(0.95, 1.08), W, dtype=np.float32)
    canvas *= grad[None, :, None]

    unit = min(H / hmm, W / wmm)  # px per mm
    x_left, x_right = 6 * unit, W - 6 * unit
    if style.strip:
        sw = 44 * unit
        canvas[:, : int(sw)] = EU_BLUE
        _stars(canvas, sw / 2, min(H * 0.3, sw * 0.75), sw * 0.3)
        code_mask, _ = _row_mask(rng, style.strip, FONTS[0], 0.05)
        ch = min(H * 0.24, 26 * unit)
        cw = min(code_mask.shape[1] * ch / code_mask.shape[0], sw * 0.85)
        cm = cv2.resize(code_mask, (max(int(cw), 1), max(int(ch), 1)), interpolation=cv2.INTER_AREA)
        _paint(canvas, cm, int(sw / 2 - cw / 2), int(H - ch - H * 0.1), (240, 240, 240))
        x_left = sw + 5 * unit
    if style.right_strip and not (text.country == "IT" and layout == "two_row"):  # IT two-row: province box
        sw = 44 * unit
        canvas[:, W - int(sw):] = style.right_strip
        if text.country == "IT" and rng.random() < 0.8:  # year circle over the province code, not part of the text
            cv2.circle(canvas, (int(W - sw / 2), int(H * 0.3)), max(int(sw * 0.28), 1), STAR_YELLOW,
                       max(int(sw * 0.06), 1), cv2.LINE_AA)
            pm, _ = _row_mask(rng, "".join(rng.choice(list("ABCDEFGHIKLMNOPRSTUVZ"), 2)), FONTS[0], 0.05)
            ph = H * 0.22
            pw = min(pm.shape[1] * ph / pm.shape[0], sw * 0.8)
            pm = cv2.resize(pm, (max(int(pw), 1), max(int(ph), 1)), interpolation=cv2.INTER_AREA)
            _paint(canvas, pm, int(W - sw / 2 - pw / 2), int(H * 0.66), (240, 240, 240))
        elif text.country != "IT" and rng.random() < 0.7:  # French department number, not part of the text
            dm, _ = _row_mask(rng, f"{int(rng.integers(1, 96)):02d}", FONTS[0], 0.05)
            dh = H * 0.22
            dw = min(dm.shape[1] * dh / dm.shape[0], sw * 0.8)
            dm = cv2.resize(dm, (max(int(dw), 1), max(int(dh), 1)), interpolation=cv2.INTER_AREA)
            _paint(canvas, dm, int(W - sw / 2 - dw / 2), int(H * 0.68), (240, 240, 240))
        x_right = W - sw - 5 * unit
    avail = x_right - x_left

    spacing = rng.uniform(0.04, 0.16)
    condense = rng.uniform(0.8, 1.12)
    if layout == "one_row":
        char_h = H * rng.uniform(0.6, 0.74)
        centres = [H * 0.5 + rng.uniform(-0.04, 0.04) * H]
    else:
        char_h = H * rng.uniform(0.32, 0.4)
        centres = [H * rng.uniform(0.25, 0.3), H * rng.uniform(0.7, 0.75)]
    fg = tuple(int(np.clip(v + j, 0, 255)) for v, j in zip(style.fg, rng.integers(-10, 11, size=3)))
    emblem_row = -1
    furnished = furniture_p > 0 and rng.random() < furniture_p
    if not furnished and emblem_p > 0 and text.country != "NL" and rng.random() < emblem_p:
        emblem_row = int(rng.integers(len(rows)))
    if furnished and text.country == "NO" and style.strip:
        _nor_flag(canvas, 22 * unit, H * 0.25, 30 * unit)
    drawn: list[str] = []
    for ri, (row, cy) in enumerate(zip(rows, centres)):
        kinds: list[str] = []
        if furnished and ri == 0 and text.country in _FURNITURE:
            row, kinds = _furnish(row, text.country, layout)
        if text.country == "DE":
            row = row.replace("-", "  ")  # seals sit where other countries print a dash
        if ri == emblem_row:
            row = _with_emblem(rng, row, layout == "two_row" and ri == 0)
        mask, spans = _row_mask(rng, row, font, spacing)
        s = char_h / mask.shape[0]
        w = mask.shape[1] * s * condense
        w = min(w, avail * 0.97)
        mw, mh = max(int(w), 1), max(int(char_h), 1)
        m = cv2.resize(mask, (mw, mh), interpolation=cv2.INTER_AREA)
        x = int(x_left + (avail - mw) / 2 + rng.uniform(-0.03, 0.03) * (avail - mw + 1))
        y = int(cy - mh / 2)
        _paint(canvas, m, x, y, fg)
        sx = mw / mask.shape[1]
        for ch_, a, b in spans:
            if ch_ == "#":
                if kinds:
                    drawn.append(kinds[0])
                    _crest(rng, canvas, int(x + a * sx), int(x + b * sx), cy, mh, kinds.pop(0))
                else:
                    _emblem(rng, canvas, int(x + a * sx), int(x + b * sx), cy, mh)
        if text.country == "NL" and layout == "one_row" and "-" in row and rng.random() < 0.15:
            _, a, b = next(sp for sp in spans if sp[0] == "-")
            dm, _ = _row_mask(rng, str(int(rng.integers(1, 4))), font, 0.05)
            dh = max(int(mh * 0.24), 2)
            dm = cv2.resize(dm, (max(int(dm.shape[1] * dh / dm.shape[0]), 1), dh), interpolation=cv2.INTER_AREA)
            _paint(canvas, dm, int(x + (a + b) / 2 * sx - dm.shape[1] / 2), int(y + mh * 0.02), fg)
        if text.country == "DE" and "de" not in drawn and rng.random() < 0.9:
            gaps = [sp for sp in spans if sp[0] == " "][:2]
            if gaps:
                _, a, b = gaps[0]
                cx = int(x + (a + b) * sx)  # two spaces: the seals sit at the end of the first
                r = max(int(mh * 0.16), 1)
                cv2.circle(canvas, (cx, int(cy - mh * 0.2)), r, tuple(int(v) for v in rng.integers(60, 230, 3)), -1, cv2.LINE_AA)
                cv2.circle(canvas, (cx, int(cy + mh * 0.22)), r, tuple(int(v) for v in rng.integers(60, 230, 3)), -1, cv2.LINE_AA)

    if style.border and rng.random() < 0.75:
        t = max(int(unit * rng.uniform(1.5, 3.5)), 1)
        inset = int(unit * rng.uniform(2, 5))
        cv2.rectangle(canvas, (inset, inset), (W - 1 - inset, H - 1 - inset), fg, t, cv2.LINE_AA)
    if rng.random() < 0.35:  # screws
        for sx_ in (rng.uniform(0.15, 0.3), rng.uniform(0.7, 0.85)):
            sy_ = rng.uniform(0.06, 0.14) if layout == "one_row" else rng.uniform(0.46, 0.54)
            cv2.circle(canvas, (int(W * sx_), int(H * sy_)), max(int(4 * unit), 1),
                       (150, 150, 150), -1, cv2.LINE_AA)

    img = np.clip(canvas, 0, 255).astype(np.uint8)
    # rounded plate corners: outside them is whatever the plate is mounted on
    r = max(int(6 * unit), 1)
    outside = np.ones((H, W), np.uint8)
    cv2.rectangle(outside, (r, 0), (W - 1 - r, H - 1), 0, -1)
    cv2.rectangle(outside, (0, r), (W - 1, H - 1 - r), 0, -1)
    for cx, cy in ((r, r), (W - 1 - r, r), (r, H - 1 - r), (W - 1 - r, H - 1 - r)):
        cv2.circle(outside, (cx, cy), r, 0, -1)
    img[outside > 0] = (30, 30, 30)
    corners = ((0.0, 0.0), (W - 1.0, 0.0), (W - 1.0, H - 1.0), (0.0, H - 1.0))
    return RenderedPlate(
        image=cv2.cvtColor(img, cv2.COLOR_RGB2BGR), text=text.text, country=text.country, layout=layout,
        corners=corners, printed=text.printed, style=style.name, sidecode=text.sidecode, rows=tuple(rows),
    )
