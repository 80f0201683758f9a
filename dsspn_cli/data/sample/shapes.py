"""The shapes the sample scenes are made of: polygon primitives, and the objects (vehicles,
people, animals, plants, furniture) built of them in a unit frame that ``place`` scales and
moves into the image."""

from __future__ import annotations

import math

import numpy as np

# ------------------------------------------------------------------------------- geometry
# Polygons are flat [x0, y0, x1, y1, ...] lists, as pycocotools and the COCO JSON take them.


def rect(x0, y0, x1, y1):
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def ngon(cx, cy, rx, ry=None, n=12, rot=0.0):
    ry = rx if ry is None else ry
    a = rot + np.arange(n) * (2 * math.pi / n)
    return np.stack([cx + rx * np.cos(a), cy + ry * np.sin(a)], 1).ravel().tolist()


def seg(x0, y0, x1, y1, w):
    """A straight stroke of width w from (x0, y0) to (x1, y1), as a quad."""
    dx, dy = x1 - x0, y1 - y0
    norm = math.hypot(dx, dy) or 1.0
    nx, ny = -dy / norm * w / 2, dx / norm * w / 2
    return [x0 + nx, y0 + ny, x1 + nx, y1 + ny, x1 - nx, y1 - ny, x0 - nx, y0 - ny]


def ring(cx, cy, r, w, n=12):
    a = np.arange(n + 1) * (2 * math.pi / n)
    xs, ys = cx + r * np.cos(a), cy + r * np.sin(a)
    return [seg(xs[k], ys[k], xs[k + 1], ys[k + 1], w) for k in range(n)]


def blob(rng, cx, cy, rx, ry=None, n=20, rough=0.18):
    ry = rx if ry is None else ry
    a = np.arange(n) * (2 * math.pi / n)
    k = rng.integers(3, 7)
    r = 1 + rough * (np.sin(k * a + rng.uniform(0, 6.3)) * 0.6 + rng.uniform(-1, 1, n) * 0.5)
    return np.stack([cx + rx * r * np.cos(a), cy + ry * r * np.sin(a)], 1).ravel().tolist()


def place(polys, cx, yg, scale, flip=1.0):
    """Unit-frame polygons (origin at the bottom centre, y up negative) to image coordinates."""
    out = []
    for poly in polys:
        arr = np.asarray(poly, np.float64).reshape(-1, 2)
        out.append(np.stack([cx + flip * arr[:, 0] * scale, yg + arr[:, 1] * scale], 1)
                   .ravel().tolist())
    return out


# ------------------------------------------------------------------------------- objects
# Each returns parts: (concept, polygons, details), in unit coordinates; details are
# (polygons, shade factor) drawn inside the part without changing its label.


def car():
    wheels = [ngon(-0.3, -0.1, 0.1, n=10), ngon(0.3, -0.1, 0.1, n=10)]
    body = [rect(-0.5, -0.3, 0.5, -0.08),
            [-0.3, -0.3, 0.32, -0.3, 0.18, -0.45, -0.16, -0.45], *wheels]
    details = [([[-0.25, -0.31, 0.27, -0.31, 0.16, -0.425, -0.13, -0.425]], 0.45),
               (wheels, 0.25), ([ngon(-0.3, -0.1, 0.04, n=8), ngon(0.3, -0.1, 0.04, n=8)],
                                2.2), ([rect(0.46, -0.27, 0.5, -0.22)], 1.6)]
    return [("car", body, details)]


def van():
    wheels = [ngon(-0.3, -0.1, 0.1, n=10), ngon(0.3, -0.1, 0.1, n=10)]
    body = [[-0.5, -0.08, 0.5, -0.08, 0.5, -0.4, 0.32, -0.62, -0.5, -0.62], *wheels]
    details = [([[0.33, -0.58, 0.46, -0.42, 0.33, -0.42]], 0.45),
               ([rect(-0.45, -0.56, 0.27, -0.44)], 0.6), (wheels, 0.25)]
    return [("van", body, details)]


def truck():
    wheels = [ngon(x, -0.065, 0.065, n=10) for x in (-0.36, -0.2, 0.36)]
    body = [rect(0.22, -0.42, 0.5, -0.1), rect(-0.5, -0.55, 0.2, -0.12),
            rect(-0.5, -0.14, 0.5, -0.07), *wheels]
    details = [([rect(0.32, -0.38, 0.47, -0.27)], 0.45), (wheels, 0.25),
               ([rect(-0.5, -0.55, 0.2, -0.5)], 0.8)]
    return [("truck-other", body, details)]


def bus():
    wheels = [ngon(-0.33, -0.045, 0.045, n=10), ngon(0.33, -0.045, 0.045, n=10)]
    body = [rect(-0.5, -0.3, 0.5, -0.035), *wheels]
    windows = [rect(-0.46 + k * 0.125, -0.25, -0.46 + k * 0.125 + 0.095, -0.17)
               for k in range(7)]
    details = [(windows, 0.45), ([rect(0.4, -0.16, 0.46, -0.045)], 0.6), (wheels, 0.25),
               ([rect(-0.5, -0.08, 0.5, -0.06)], 1.4)]
    return [("bus", body, details)]


def bicycle(w=0.045):
    parts = ring(-0.33, -0.2, 0.18, w) + ring(0.33, -0.2, 0.18, w)
    joints = [(-0.33, -0.2, -0.05, -0.46), (-0.05, -0.46, 0.27, -0.46),
              (0.27, -0.46, 0.33, -0.2), (-0.33, -0.2, 0.02, -0.2),
              (0.02, -0.2, -0.05, -0.46), (0.02, -0.2, 0.27, -0.46),
              (0.27, -0.46, 0.24, -0.58), (-0.1, -0.5, 0.0, -0.5)]
    parts += [seg(*j, w) for j in joints]
    return [("bicycle", parts, [])]


def bicyclist():
    body = [seg(-0.05, -0.5, 0.1, -0.92, 0.16), ngon(0.13, -1.02, 0.075, n=10),
            seg(0.1, -0.88, 0.25, -0.6, 0.06), seg(-0.05, -0.5, 0.08, -0.34, 0.08),
            seg(0.08, -0.34, 0.02, -0.2, 0.07)]
    details = [([ngon(0.13, -1.02, 0.075, n=10)], 1.25), ([body[3], body[4]], 0.7)]
    return bicycle() + [("bicyclist", body, details)]


def pedestrian(rng):
    stride = rng.uniform(0.0, 0.1)
    arm = rng.uniform(-0.05, 0.08)
    body = [ngon(0, -0.92, 0.075, n=10), [-0.1, -0.84, 0.1, -0.84, 0.09, -0.45, -0.09, -0.45],
            seg(-0.05, -0.46, -0.05 - stride, 0.0, 0.075),
            seg(0.05, -0.46, 0.05 + stride, 0.0, 0.075),
            seg(-0.11, -0.8, -0.15 - arm, -0.5, 0.05), seg(0.11, -0.8, 0.15 + arm, -0.5, 0.05)]
    details = [([body[0]], 1.25), ([body[2], body[3]], 0.7)]
    return [("pedestrian", body, details)]


_ANIMALS = {  # body height, leg length, head (dx, dy, rx, ry), neck, tail
    "cat": dict(bh=0.3, leg=0.16, head=(0.56, 0.85, 0.14, 0.12), neck=False, tail=(-0.72, -0.6)),
    "dog": dict(bh=0.32, leg=0.3, head=(0.6, 0.95, 0.17, 0.12), neck=False, tail=(-0.68, 0.1)),
    "horse": dict(bh=0.36, leg=0.55, head=(0.74, 1.5, 0.19, 0.08), neck=True,
                  tail=(-0.62, -0.55)),
    "cow": dict(bh=0.48, leg=0.33, head=(0.64, 0.85, 0.14, 0.12), neck=False,
                tail=(-0.56, -0.45)),
}


def animal(kind, rng):
    p = _ANIMALS[kind]
    bh, leg = p["bh"], p["leg"]
    cy = -leg - bh / 2 + 0.04
    body = [ngon(0, cy, 0.5, bh / 2, n=16)]
    legs = [rect(x - 0.045, cy, x + 0.045, 0) for x in (-0.36, -0.24, 0.24, 0.36)]
    hx, hy, hrx, hry = p["head"]
    head_y = cy - bh / 2 * hy
    head = ngon(hx, head_y, hrx, hry, n=12, rot=-0.5 if kind == "horse" else 0.0)
    parts = body + legs + [head]
    if p["neck"]:
        parts.append(seg(0.32, cy - 0.05, hx - 0.05, head_y, 0.16))
    tx, ty = p["tail"]
    parts.append(seg(-0.46, cy - 0.05, tx, cy + ty * bh if ty < 0 else cy + 0.25, 0.05))
    if kind == "cat":
        parts += [[hx - 0.1, head_y - 0.06, hx - 0.04, head_y - 0.2, hx, head_y - 0.08],
                  [hx + 0.02, head_y - 0.08, hx + 0.08, head_y - 0.2, hx + 0.12, head_y - 0.05]]
    details = [(legs, 0.8), ([ngon(hx + 0.05, head_y - 0.02, 0.025, n=6)], 0.3)]
    if kind == "cow":
        spots = [ngon(rng.uniform(-0.35, 0.35), cy + rng.uniform(-0.12, 0.12),
                      rng.uniform(0.06, 0.12), rng.uniform(0.05, 0.09), n=8)
                 for _ in range(4)]
        details.append((spots, 0.35))
    if kind == "dog":
        details.append(([ngon(hx - 0.05, head_y + 0.02, 0.05, 0.09, n=8)], 0.6))
    return [(kind, parts, details)]


def bird(rng):
    up = rng.uniform(-0.35, 0.25)
    body = [ngon(0, -0.1, 0.25, 0.09, n=10), [-0.1, -0.12, -0.45, -0.1 + up, 0.05, -0.08],
            [0.0, -0.12, 0.38, -0.1 + up, 0.1, -0.08], ngon(0.27, -0.14, 0.07, n=8)]
    return [("bird", body, [([body[3]], 0.8)])]


def tree_or_palm(rng, kind):
    if kind == "palm":
        trunk = [seg(0, 0, 0.05, -0.5, 0.05), seg(0.05, -0.5, 0.08, -0.95, 0.045)]
        fronds = [seg(0.08, -0.95, 0.08 + 0.35 * math.cos(a), -0.95 + 0.3 * math.sin(a) + 0.08,
                      0.07) for a in np.linspace(math.pi * 1.05, math.pi * 1.95, 6)]
        fronds += [seg(0.08, -0.95, 0.08 + 0.3 * math.cos(a), -0.95 - 0.12 * math.sin(a),
                       0.07) for a in (0.2, math.pi - 0.2)]
        return [("palm", trunk + fronds, [(trunk, 0.65)])]
    trunk = [rect(-0.04, -0.5, 0.04, 0)]
    crown = blob(rng, 0, -0.72, 0.28, 0.3, rough=0.25)
    return [("tree-other", trunk + [crown], [(trunk, 0.55)])]


def bed():
    bed = [[-0.5, -0.75, -0.42, -0.75, -0.42, -0.42, 0.5, -0.42, 0.5, -0.08, -0.5, -0.08],
           rect(-0.48, -0.08, -0.43, 0), rect(0.43, -0.08, 0.48, 0)]
    pillow = [rect(-0.41, -0.53, -0.14, -0.42)]
    details = [([rect(-0.42, -0.42, 0.5, -0.33)], 1.25), ([rect(-0.1, -0.33, 0.5, -0.15)], 0.8)]
    return [("pillow", pillow, []), ("bed", bed, details)]


def couch():
    body = [rect(-0.5, -0.3, 0.5, -0.06), rect(-0.42, -0.6, 0.42, -0.29),
            rect(-0.5, -0.44, -0.38, -0.06), rect(0.38, -0.44, 0.5, -0.06),
            rect(-0.46, -0.06, -0.42, 0), rect(0.42, -0.06, 0.46, 0)]
    seams = [rect(-0.005, -0.6, 0.005, -0.06), rect(-0.38, -0.31, 0.38, -0.28)]
    return [("couch", body, [(seams, 0.6), ([body[1]], 0.9)])]


def armchair():
    body = [rect(-0.5, -0.36, 0.5, -0.1), rect(-0.36, -0.85, 0.36, -0.34),
            rect(-0.5, -0.56, -0.3, -0.1), rect(0.3, -0.56, 0.5, -0.1),
            rect(-0.45, -0.1, -0.38, 0), rect(0.38, -0.1, 0.45, 0)]
    return [("armchair", body, [([body[2], body[3]], 0.8)])]


def swivel_chair():
    body = [rect(-0.35, -0.5, 0.35, -0.42), [-0.25, -1.0, 0.25, -1.0, 0.22, -0.58, -0.22, -0.58],
            rect(-0.05, -0.58, 0.05, -0.5), rect(-0.035, -0.42, 0.035, -0.1),
            seg(0, -0.1, -0.4, -0.05, 0.05), seg(0, -0.1, 0.4, -0.05, 0.05),
            seg(0, -0.1, -0.15, -0.03, 0.05), seg(0, -0.1, 0.15, -0.03, 0.05),
            ngon(-0.4, -0.035, 0.035, n=8), ngon(0.4, -0.035, 0.035, n=8),
            ngon(-0.15, -0.03, 0.03, n=8), ngon(0.15, -0.03, 0.03, n=8)]
    return [("swivel chair", body, [(body[2:], 0.4)])]


def coffee_table():
    body = [rect(-0.5, -0.36, 0.5, -0.28), rect(-0.46, -0.28, -0.41, 0),
            rect(0.41, -0.28, 0.46, 0), rect(-0.3, -0.3, 0.3, -0.22)]
    return [("coffee table", body, [([body[0]], 1.2)])]


def lamp():
    body = [ngon(0, -0.02, 0.12, 0.025, n=10), rect(-0.018, -0.82, 0.018, -0.02),
            [-0.13, -0.8, 0.13, -0.8, 0.08, -1.0, -0.08, -1.0]]
    return [("lamp", body, [([body[2]], 1.5)])]
