"""The street scene (every dataset): a skyline, a road in one-point perspective with its
markings, trees, poles, signs and lights beside it, vehicles on it, people on the pavement.
"""

from __future__ import annotations

import numpy as np

from dsspn_cli.data.sample.canvas import Canvas
from dsspn_cli.data.sample.shapes import (
    bicycle,
    bicyclist,
    bird,
    blob,
    bus,
    car,
    ngon,
    pedestrian,
    rect,
    seg,
    tree_or_palm,
    truck,
    van,
)


def street_scene(cv: Canvas):
    rng, h, w = cv.rng, cv.h, cv.w
    yh = h * rng.uniform(0.36, 0.48)
    xv = w * rng.uniform(0.35, 0.65)
    base = yh + 0.02 * h            # where the buildings stand and the pavement starts
    _skyline(cv, yh, base)
    road = _Road(cv, yh, xv, base)
    _road_surface(road)
    _greenery(road)
    _street_furniture(road)
    _traffic(road)
    if rng.random() < 0.3:
        for _ in range(int(rng.integers(1, 3))):
            cv.add(bird(rng), w * rng.uniform(0.1, 0.9), yh * rng.uniform(0.2, 0.7),
                   h * rng.uniform(0.06, 0.1), 1.0 if rng.random() < 0.5 else -1.0)
    cv.finish()


def _skyline(cv: Canvas, yh, base):
    """Sky, a row of buildings standing on the horizon, maybe a fence, and the pavement."""
    rng, h, w = cv.rng, cv.h, cv.w
    cv.paint("sky-other", rect(0, 0, w, base))
    yy, xx = np.mgrid[0:h, 0:w]
    x = -w * rng.uniform(0, 0.1)
    while x < w:
        bw = w * rng.uniform(0.1, 0.3)
        if rng.random() < 0.12:
            x += bw * 0.5
            continue
        kind = rng.choice(["building-other", "skyscraper", "house-other"], p=[0.5, 0.25, 0.25])
        if kind == "skyscraper":
            top = h * rng.uniform(-0.05, 0.12)
            px, py, pw, ph = 3, 4, 1, 3
        elif kind == "building-other":
            top = yh - h * rng.uniform(0.12, 0.3)
            px, py, pw, ph = 6, 7, 3, 3
        else:
            top = yh - h * rng.uniform(0.06, 0.13)
            px, py, pw, ph = 9, 8, 4, 4
        windows = (((xx - int(x)) % px < pw) & ((yy - int(top)) % py < ph)
                   & (yy > top + 2) & (yy < base - 3))
        cv.paint(str(kind), rect(x, top, x + bw, base), [(windows, 0.55)])
        if kind == "house-other":
            cv.paint("roof", [[x - 1, top + 1, x + bw + 1, top + 1,
                               x + bw * 0.8, top - h * rng.uniform(0.04, 0.09),
                               x + bw * 0.2, top - h * rng.uniform(0.04, 0.09)]])
        x += bw
    if rng.random() < 0.4:
        slats = (xx % 4 == 0)
        cv.paint("fence-other", rect(0, base - 0.06 * h, w, base), [(slats, 0.6)])
    cv.paint("pavement", rect(0, base, w, h))


class _Road:
    """The road's perspective: it starts at the vanishing point (xv, yh) on the horizon and
    fans out to [xl, xr] at the bottom edge. Places across it are fractions f (0 its left
    edge, 1 its right edge) at an image row y."""

    def __init__(self, cv: Canvas, yh, xv, base):
        rng, h, w = cv.rng, cv.h, cv.w
        self.cv, self.h, self.w, self.yh, self.xv, self.base = cv, h, w, yh, xv, base
        self.span = h - yh
        self.xl, self.xr = xv - w * rng.uniform(0.5, 0.9), xv + w * rng.uniform(0.5, 0.9)
        self.ppm = 0.5 * h / 1.7 / self.span     # px per metre per px below the horizon

    def x(self, f, y):
        t = (y - self.yh) / self.span
        return (1 - t) * self.xv + t * (self.xl + f * (self.xr - self.xl))

    def strip(self, f0, f1, y0=None, y1=None):
        """The quad between fractions f0 and f1 from row y0 (the horizon) to y1 (the bottom)."""
        y0 = self.yh if y0 is None else y0
        y1 = self.h if y1 is None else y1
        return [self.x(f0, y0), y0, self.x(f1, y0), y0, self.x(f1, y1), y1, self.x(f0, y1), y1]

    def sidewalk_x(self, y, margin):
        """A random x on the pavement left or right of the road at row y (None: no room)."""
        rng = self.cv.rng
        left = (0.0 + margin, self.x(-0.06, y) - margin)
        right = (self.x(1.06, y) + margin, self.w - margin)
        spans = [s for s in (left, right) if s[1] - s[0] > 1]
        if not spans:
            return None
        s = spans[int(rng.integers(len(spans)))]
        return rng.uniform(*s)


def _road_surface(road: _Road):
    """Curb, road, maybe a bike lane, the centre line's dashes, maybe a crosswalk."""
    cv, rng, yh, span, strip = road.cv, road.cv.rng, road.yh, road.span, road.strip
    cv.paint("curb", [strip(-0.04, 1.04)])
    cv.paint("road", [strip(0.0, 1.0)])
    if rng.random() < 0.4:
        f = 0.84 if rng.random() < 0.5 else 0.03
        cv.paint("bike lane", [strip(f, f + 0.13)])
    fc = rng.uniform(0.42, 0.58)
    dashes, t = [], 0.04
    while t < 1.0:
        y0, y1 = yh + t * span, yh + min(1.0, t * 1.3) * span
        dashes.append(strip(fc - 0.012, fc + 0.012, y0, y1))
        t *= 1.6
    if rng.random() < 0.5:
        dashes += [strip(0.02, 0.03), strip(0.97, 0.98)]
    cv.paint("lane marking - general", dashes)
    if rng.random() < 0.55:
        y0 = yh + span * rng.uniform(0.3, 0.6)
        y1 = y0 + span * rng.uniform(0.08, 0.14)
        cv.paint("crosswalk - plain", [strip(0, 1, y0, y1)])
        k = 9
        cv.paint("lane marking - crosswalk",
                 [strip((j + 0.25) / k, (j + 0.7) / k, y0 + 1, y1 - 1) for j in range(k)])


def _greenery(road: _Road):
    """Trees (some palms) on the pavement, bushes along the buildings."""
    cv, rng, h, w = road.cv, road.cv.rng, road.h, road.w
    yh, base, span, ppm = road.yh, road.base, road.span, road.ppm
    for _ in range(int(rng.integers(0, 4))):
        y = base + span * rng.uniform(0.0, 0.25)
        x = road.sidewalk_x(y, 2)
        if x is None:
            continue
        scale = max(ppm * (y - yh) * rng.uniform(6, 10), 0.3 * h)
        cv.add(tree_or_palm(rng, "palm" if rng.random() < 0.2 else "tree"), x, y, scale)
    for _ in range(int(rng.integers(0, 3))):
        y = base + span * rng.uniform(0.0, 0.08)
        x = rng.uniform(0, w)
        r = h * rng.uniform(0.04, 0.08)
        cv.add([("bush", [blob(rng, 0, -r * 0.8, r * 1.6, r, rough=0.2)], [])], x, y, 1.0)


def _street_furniture(road: _Road):
    """Utility poles, streetlights, traffic signs and traffic lights on the pavement."""
    cv, rng, yh, span, ppm = road.cv, road.cv.rng, road.yh, road.span, road.ppm
    for _ in range(int(rng.integers(1, 4))):
        y = yh + span * rng.uniform(0.1, 0.5)
        x = road.sidewalk_x(y, 1)
        if x is None:
            continue
        scale = ppm * (y - yh)
        kind = rng.choice(["pole", "light", "sign", "traffic"])
        flip = 1.0 if x < road.x(0.5, y) else -1.0
        if kind == "pole":
            cv.add([("utility pole", [rect(-0.15, -9, 0.15, 0)], [])], x, y, scale)
        elif kind == "light":
            cv.add([("utility pole", [rect(-0.12, -7, 0.12, 0), seg(0, -6.9, 1.6, -7.1, 0.15)],
                     []), ("streetlight", [ngon(1.7, -7.0, 0.5, 0.2, n=8)], [])],
                   x, y, scale, flip)
        elif kind == "sign":
            shape = rng.integers(3)
            if shape == 0:
                plate = ngon(0, -2.6, 0.45, n=12)
            elif shape == 1:
                plate = [-0.5, -2.3, 0.5, -2.3, 0, -3.1]
            else:
                plate = rect(-0.4, -3.0, 0.4, -2.2)
            cv.add([("traffic sign frame", [rect(-0.06, -2.3, 0.06, 0)], []),
                    ("traffic sign (front)", [plate], [([ngon(0, -2.6, 0.22, n=10)], 0.6)])],
                   x, y, scale)
        else:
            head = rect(-0.25, -4.6, 0.25, -3.3)
            lit = rng.integers(3)
            lamps = [(ngon(0, -4.4 + k * 0.42, 0.15, n=8), 2.0 if k == lit else 0.5)
                     for k in range(3)]
            cv.add([("utility pole", [rect(-0.1, -3.4, 0.1, 0)], []),
                    ("traffic light", [head], [([p], f) for p, f in lamps])], x, y, scale)


def _traffic(road: _Road):
    """Vehicles on the road (scaled by their length in metres), pedestrians on the pavement,
    maybe a parked bicycle."""
    cv, rng, yh, span, ppm = road.cv, road.cv.rng, road.yh, road.span, road.ppm
    vehicles = {"car": (car, 4.3), "van": (van, 4.8), "truck": (truck, 7.5),
                "bus": (bus, 11.0), "bike": (bicyclist, 1.8)}
    for _ in range(int(rng.integers(1, 5))):
        kind = str(rng.choice(list(vehicles), p=[0.45, 0.15, 0.13, 0.12, 0.15]))
        make, length = vehicles[kind]
        tmax = 0.3 if kind in ("bus", "truck") else 0.45
        y = yh + span * rng.uniform(0.1, tmax)
        x = rng.uniform(road.x(0.1, y), road.x(0.9, y))
        flip = 1.0 if rng.random() < 0.5 else -1.0
        cv.add(make(), x, y, ppm * (y - yh) * length, flip)
    for _ in range(int(rng.integers(0, 5))):
        y = yh + span * rng.uniform(0.15, 0.7)
        x = road.sidewalk_x(y, 2)
        if x is None:
            continue
        cv.add(pedestrian(rng), x, y, ppm * (y - yh) * rng.uniform(1.6, 1.9),
               1.0 if rng.random() < 0.5 else -1.0)
    if rng.random() < 0.3:
        y = yh + span * rng.uniform(0.2, 0.6)
        x = road.sidewalk_x(y, 4)
        if x is not None:
            cv.add(bicycle(), x, y, ppm * (y - yh) * 1.8)
