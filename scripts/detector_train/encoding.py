"""Training targets for the stride-4 centre-heat detector (numpy only, so tests run without torch).

A plate is given by its four corners (TL TR BR BL) in input pixels; its box is their bounding
box. Heat is an elongated Gaussian at the box centre; regression is supervised on the cells
near the centre so a small data set still gives many regression examples. The encoding is the
one edge/detector.py decodes: centre offset in cells, log box size in cells, corners relative to
the box centre in box widths/heights.
"""

from __future__ import annotations

import numpy as np

STRIDE = 4  # input pixels per heat-map cell
N_REG = 12  # regression channels: dx, dy, log w, log h, 4 corners x (x, y)
REG_MIN_HEAT = 0.5


def make_targets(quads: np.ndarray, ignore: np.ndarray, hw: tuple[int, int], per_plate: bool = False):
    """quads: N x 4 x 2 corners in input pixels; ignore: M x 4 boxes whose area is not scored.

    Returns heat (1,h,w), heat weight (1,h,w), reg (12,h,w), reg weight (1,h,w). With `per_plate`
    each plate's regression weights add up to 1, so a small plate, which covers few cells, counts
    as much in the corner loss as a close-up covering a hundred (by default weight is per cell).
    """
    h, w = hw[0] // STRIDE, hw[1] // STRIDE
    heat = np.zeros((h, w), np.float32)
    hw_ = np.ones((h, w), np.float32)
    reg = np.zeros((N_REG, h, w), np.float32)
    rw = np.zeros((h, w), np.float32)
    best = np.zeros((h, w), np.float32)
    owner = np.full((h, w), -1, np.int32)
    for x1, y1, x2, y2 in ignore:
        a, b = int(max(0, x1 // STRIDE)), int(min(w, np.ceil(x2 / STRIDE)))
        c, d = int(max(0, y1 // STRIDE)), int(min(h, np.ceil(y2 / STRIDE)))
        hw_[c:d, a:b] = 0.0
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    for n, q in enumerate(quads):
        x1, y1 = q.min(0)
        x2, y2 = q.max(0)
        bw, bh = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
        cx, cy = (x1 + x2) / 2 / STRIDE, (y1 + y2) / 2 / STRIDE
        sx, sy = max(bw / STRIDE / 6, 0.6), max(bh / STRIDE / 6, 0.6)
        r0, r1 = int(max(0, cy - 3 * sy - 1)), int(min(h, cy + 3 * sy + 2))
        c0, c1 = int(max(0, cx - 3 * sx - 1)), int(min(w, cx + 3 * sx + 2))
        if r0 >= r1 or c0 >= c1:
            continue
        gx, gy = xs[r0:r1, c0:c1] + 0.5, ys[r0:r1, c0:c1] + 0.5
        g = np.exp(-((gx - cx) ** 2) / (2 * sx * sx) - ((gy - cy) ** 2) / (2 * sy * sy))
        ci, cj = int(np.clip(np.floor(cy), 0, h - 1)), int(np.clip(np.floor(cx), 0, w - 1))
        if r0 <= ci < r1 and c0 <= cj < c1:
            g[ci - r0, cj - c0] = 1.0
        heat[r0:r1, c0:c1] = np.maximum(heat[r0:r1, c0:c1], g)
        hw_[r0:r1, c0:c1] = 1.0
        sel = (g >= REG_MIN_HEAT) & (g > best[r0:r1, c0:c1])
        if not sel.any():
            continue
        best[r0:r1, c0:c1] = np.where(sel, g, best[r0:r1, c0:c1])
        ox, oy = cx - gx, cy - gy
        vals = [ox, oy, np.full_like(g, np.log(bw / STRIDE)), np.full_like(g, np.log(bh / STRIDE))]
        ccx, ccy = (x1 + x2) / 2, (y1 + y2) / 2
        for k in range(4):
            vals.append(np.full_like(g, (q[k, 0] - ccx) / bw))
            vals.append(np.full_like(g, (q[k, 1] - ccy) / bh))
        for k, v in enumerate(vals):
            reg[k, r0:r1, c0:c1] = np.where(sel, v, reg[k, r0:r1, c0:c1])
        rw[r0:r1, c0:c1] = np.where(sel, g, rw[r0:r1, c0:c1])
        owner[r0:r1, c0:c1] = np.where(sel, n, owner[r0:r1, c0:c1])
    if per_plate:
        for n in np.unique(owner[owner >= 0]):
            mine = owner == n
            rw[mine] /= rw[mine].sum()
    return heat[None], hw_[None], reg, rw[None]
