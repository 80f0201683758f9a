"""The indoor scene (ADE20K and COCO-Stuff): a room seen from its open side, with a window, a
painting and a rug maybe, the furniture of a bedroom, a living room or an office, and maybe a
cat or a dog, on the furniture or on the floor.
"""

from __future__ import annotations

from dsspn_cli.data.sample.canvas import Canvas
from dsspn_cli.data.sample.shapes import (
    animal,
    armchair,
    bed,
    coffee_table,
    couch,
    lamp,
    rect,
    swivel_chair,
)


def indoor_scene(cv: Canvas):
    rng = cv.rng
    room = _Room(cv)
    _walls(cv, room)
    _window(cv, room)
    _painting(cv, room)
    _rug(cv, room)
    kind = str(rng.choice(["bedroom", "living", "office"]))
    pet_spot = _FURNISH[kind](cv, room)
    _pet(cv, room, pet_spot)
    cv.finish()


class _Room:
    """The room in one-point perspective: its back wall is the box (bx0, by0)-(bx1, by1); the
    floor runs from the wall's foot (by1) to the bottom edge, fh pixels high."""

    def __init__(self, cv: Canvas):
        rng, h, w = cv.rng, cv.h, cv.w
        self.h = h
        self.bx0, self.bx1 = w * rng.uniform(0.18, 0.3), w * rng.uniform(0.7, 0.82)
        self.by0, self.by1 = h * rng.uniform(0.12, 0.25), h * rng.uniform(0.55, 0.66)
        self.fh = h - self.by1

    def unit(self, y):
        """The size of a unit-frame object standing at row y: larger nearer the bottom."""
        return self.h * (0.45 + 0.55 * (y - self.by1) / self.fh)


def _walls(cv: Canvas, room: _Room):
    """Ceiling, floor (wood, tiles or carpet) and the three walls, of one kind."""
    rng, h, w = cv.rng, cv.h, cv.w
    bx0, bx1, by0, by1 = room.bx0, room.bx1, room.by0, room.by1
    wall = str(rng.choice(["wall-other", "wall-brick"]))
    cv.paint("ceiling-other", [[0, 0, w, 0, bx1, by0, bx0, by0]])
    cv.paint(str(rng.choice(["floor-wood", "floor-tile", "carpet"])),
             [[bx0, by1, bx1, by1, w, h, 0, h]])
    cv.paint(wall, [[0, 0, bx0, by0, bx0, by1, 0, h], [w, 0, w, h, bx1, by1, bx1, by0],
                    rect(bx0, by0, bx1, by1)])


def _window(cv: Canvas, room: _Room):
    """Maybe a window with crossed bars in the back wall, maybe with curtains."""
    rng = cv.rng
    bx0, bx1, by0, by1 = room.bx0, room.bx1, room.by0, room.by1
    bw, bh = bx1 - bx0, by1 - by0
    if rng.random() < 0.8:
        wx0 = bx0 + bw * rng.uniform(0.05, 0.55)
        wx1 = wx0 + bw * rng.uniform(0.2, 0.35)
        wy0, wy1 = by0 + bh * 0.12, by0 + bh * rng.uniform(0.55, 0.75)
        bars = [rect((wx0 + wx1) / 2 - 0.7, wy0, (wx0 + wx1) / 2 + 0.7, wy1),
                rect(wx0, (wy0 + wy1) / 2 - 0.7, wx1, (wy0 + wy1) / 2 + 0.7)]
        cv.paint("windowpane", [rect(wx0, wy0, wx1, wy1)], [([rect(wx0, wy0, wx1, wy1)], 1.3),
                                                            (bars, 0.4)])
        if rng.random() < 0.6:
            cw = bw * 0.07
            cv.paint("curtain", [rect(wx0 - cw, wy0 - 2, wx0 + 1, wy1 + 0.1 * bh),
                                 rect(wx1 - 1, wy0 - 2, wx1 + cw, wy1 + 0.1 * bh)])


def _painting(cv: Canvas, room: _Room):
    """Maybe a framed painting on a side wall, drawn in the side wall's perspective."""
    rng, h, w = cv.rng, cv.h, cv.w
    bx0, by0, by1 = room.bx0, room.by0, room.by1
    if rng.random() < 0.6:
        px = bx0 * rng.uniform(0.25, 0.55)
        side = rng.random() < 0.5
        t0, t1 = px / bx0, (px + bx0 * 0.3) / bx0
        top = lambda t: by0 * t + h * 0.25 * (1 - t)       # noqa: E731 (converging lines)
        bot = lambda t: by0 * t + (by1 - by0) * 0.6 * t + h * 0.55 * (1 - t)  # noqa: E731
        quad = [px, top(t0), px + bx0 * 0.3, top(t1), px + bx0 * 0.3, bot(t1), px, bot(t0)]
        if side:
            quad = [w - v if k % 2 == 0 else v for k, v in enumerate(quad)]
        cv.paint("painting", [quad], [([quad], 0.5)], jitter=0.0)
        cx = sum(quad[0::2]) / 4
        cy = sum(quad[1::2]) / 4
        inner = [cx + (v - cx) * 0.8 if k % 2 == 0 else cy + (v - cy) * 0.8
                 for k, v in enumerate(quad)]
        cv.shade[cv.raster([inner]) & (cv.cmap == cv.kit.index["painting"])] *= 2.4


def _rug(cv: Canvas, room: _Room):
    rng, w = cv.rng, cv.w
    by1, fh = room.by1, room.fh
    if rng.random() < 0.5:
        y0, y1 = by1 + fh * rng.uniform(0.3, 0.5), by1 + fh * rng.uniform(0.75, 0.95)
        cx = w * rng.uniform(0.35, 0.65)
        cv.paint("rug", [[cx - w * 0.15, y0, cx + w * 0.15, y0, cx + w * 0.22, y1,
                          cx - w * 0.22, y1]])


# The furniture of each kind of room. Each returns where a pet may lie on it, as (x, row,
# depth), or None.


def _bedroom(cv: Canvas, room: _Room):
    rng, w, by1, fh, unit = cv.rng, cv.w, room.by1, room.fh, room.unit
    y = by1 + fh * rng.uniform(0.1, 0.3)
    x = w * rng.uniform(0.35, 0.6)
    s = unit(y) * 0.9
    flip = 1.0 if rng.random() < 0.5 else -1.0
    cv.add(bed(), x, y, s, flip)
    pet_spot = (x + flip * s * rng.uniform(-0.1, 0.3), y - 0.42 * s, y + 0.5)
    lx = x - flip * s * 0.62
    cv.add(lamp(), lx, y - 2, unit(y) * 0.5)
    return pet_spot


def _living_room(cv: Canvas, room: _Room):
    rng, w, by1, fh, unit = cv.rng, cv.w, room.by1, room.fh, room.unit
    y = by1 + fh * rng.uniform(0.05, 0.2)
    x = w * rng.uniform(0.4, 0.6)
    s = unit(y) * 0.8
    cv.add(couch(), x, y, s)
    pet_spot = (x + s * rng.uniform(-0.3, 0.3), y - 0.3 * s, y + 0.5)
    y2 = by1 + fh * rng.uniform(0.45, 0.7)
    side = 1.0 if rng.random() < 0.5 else -1.0
    cv.add(armchair(), w * (0.5 + side * rng.uniform(0.28, 0.36)), y2, unit(y2) * 0.38)
    y3 = by1 + fh * rng.uniform(0.5, 0.8)
    cv.add(coffee_table(), w * 0.5 - side * w * rng.uniform(0.0, 0.15), y3,
           unit(y3) * 0.45)
    cv.add(lamp(), x - side * s * 0.65, y - 1, unit(y) * 0.55)
    return pet_spot


def _office(cv: Canvas, room: _Room):
    rng, w, by1, fh, unit = cv.rng, cv.w, room.by1, room.fh, room.unit
    for _ in range(int(rng.integers(1, 3))):
        y = by1 + fh * rng.uniform(0.25, 0.85)
        cv.add(swivel_chair(), w * rng.uniform(0.15, 0.85), y, unit(y) * 0.5,
               1.0 if rng.random() < 0.5 else -1.0)
    y = by1 + fh * rng.uniform(0.05, 0.2)
    cv.add(coffee_table(), w * rng.uniform(0.3, 0.7), y, unit(y) * 0.6)
    cv.add(lamp(), w * rng.uniform(0.1, 0.9), y - 1, unit(y) * 0.6)
    return None


_FURNISH = {"bedroom": _bedroom, "living": _living_room, "office": _office}


def _pet(cv: Canvas, room: _Room, pet_spot):
    """Maybe a cat or a dog: half the time on the furniture's pet spot when there is one."""
    rng, w, by1, fh, unit = cv.rng, cv.w, room.by1, room.fh, room.unit
    if rng.random() < 0.65:
        kind = str(rng.choice(["cat", "dog"]))
        size = 0.2 if kind == "cat" else 0.3
        flip = 1.0 if rng.random() < 0.5 else -1.0
        if pet_spot is not None and rng.random() < 0.5:
            x, y, z = pet_spot
            cv.add(animal(kind, rng), x, y, unit(z) * size * 0.9, flip, z=z)
        else:
            y = by1 + fh * rng.uniform(0.4, 0.95)
            cv.add(animal(kind, rng), w * rng.uniform(0.15, 0.85), y, unit(y) * size, flip)
