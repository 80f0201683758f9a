"""Drawing a scene: the canvas that scene code paints concepts on and queues objects to, and
the rendering of a finished canvas into an RGB image (colours, textures, light, noise)."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from dsspn_cli.data.sample.concepts import TEXTURES, ConceptKit
from dsspn_cli.data.sample.shapes import place


class Canvas:
    """One scene being drawn: its concept map (an index into ``CONCEPTS`` a pixel), the
    shading that details paint over it, the objects queued to draw, and the RNG every draw of
    the scene takes its numbers from, in order."""

    def __init__(self, kit: ConceptKit, h: int, w: int, rng):
        self.kit, self.h, self.w, self.rng = kit, h, w, rng
        self.cmap = np.full((h, w), kit.none, np.int16)
        self.shade = np.ones((h, w), np.float32)
        self.pending = []       # (concept, polygons, details, z, order)
        self.instances = []     # (concept index, polygons, mask): COCO things, back to front

    def clean(self, polys):
        """Clamp to the image, round to 0.01 px and drop empty polygons (what the JSON holds)."""
        if polys and isinstance(polys[0], (int, float)):
            polys = [polys]         # one polygon
        out = []
        for poly in polys:
            arr = np.asarray(poly, np.float64).reshape(-1, 2)
            if len(arr) < 3:
                continue
            arr[:, 0] = arr[:, 0].clip(0, self.w)
            arr[:, 1] = arr[:, 1].clip(0, self.h)
            arr = np.round(arr, 2)
            x, y = arr[:, 0], arr[:, 1]
            if abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) < 0.02:
                continue
            out.append([float(v) for v in arr.ravel()])
        return out

    def raster(self, polys) -> np.ndarray:
        if isinstance(polys, np.ndarray):
            return polys
        polys = self.clean(polys)
        if not polys:
            return np.zeros((self.h, self.w), bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, self.h, self.w))
        return mask_utils.decode(rle).astype(bool)

    def paint(self, concept: str, spec, details=(), jitter=0.06):
        """Paint a region now (polygons or a boolean mask); returns its mask."""
        mask = self.raster(spec)
        self.cmap[mask] = self.kit.index[concept]
        self.shade[mask] = 1.0 + self.rng.uniform(-jitter, jitter)
        for dspec, factor in details:
            self.shade[self.raster(dspec) & mask] *= factor
        return mask

    def add(self, parts, cx, yg, scale, flip=1.0, z=None):
        """Queue an object (parts in unit coordinates) standing at (cx, yg)."""
        z = yg if z is None else z
        for concept, polys, details in parts:
            placed = place(polys, cx, yg, scale, flip)
            pdetails = [(place(d, cx, yg, scale, flip), f) for d, f in details]
            self.pending.append((concept, placed, pdetails, z, len(self.pending)))

    def finish(self):
        """Draw the queued objects: everything that is not a COCO thing first, then the things,
        each group back to front (so thing pixels are exactly their polygon rasterisation minus
        nearer things, which the COCO JSON reproduces)."""
        def key(item):
            return (bool(self.kit.thing[self.kit.index[item[0]]]), item[3], item[4])

        for concept, polys, details, _z, _ in sorted(self.pending, key=key):
            ci = self.kit.index[concept]
            if self.kit.thing[ci]:
                polys = self.clean(polys)
                if not polys:
                    continue
                mask = self.paint(concept, polys, details)
                if mask.any():
                    self.instances.append((ci, polys, mask))
            else:
                self.paint(concept, polys, details)
        self.pending = []


# ------------------------------------------------------------------------------ rendering


def _upsample(rng, h, w, cell):
    small = rng.uniform(-1, 1, (max(2, h // cell + 2), max(2, w // cell + 2))).astype(np.float32)
    img = Image.fromarray(small, mode="F").resize((w + 2 * cell, h + 2 * cell), Image.BILINEAR)
    return np.asarray(img, np.float32)[cell:cell + h, cell:cell + w]


def render(cv: Canvas) -> np.ndarray:
    """The RGB image of a drawn canvas: concept colours, textures, shading, light and noise."""
    kit, rng, h, w = cv.kit, cv.rng, cv.h, cv.w
    cmap = cv.cmap
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    grain = rng.uniform(-1, 1, (h, w)).astype(np.float32)
    blotch = _upsample(rng, h, w, 6)
    tex = np.zeros((h, w), np.float32)
    phase = rng.uniform(0, 2 * math.pi)
    for ci in np.unique(cmap):
        m = cmap == ci
        x, y = xx[m], yy[m]
        p = kit.period[ci]
        kind = TEXTURES[kit.kind[ci]]
        if kind == "hstripes":
            t = np.sin(2 * math.pi * y / p + phase)
        elif kind == "vstripes":
            t = np.sin(2 * math.pi * x / p + phase)
        elif kind == "diag":
            t = np.sin(2 * math.pi * (x + y) / (p * 1.4) + phase)
        elif kind == "checker":
            t = np.sign(np.sin(math.pi * x / p + phase) * np.sin(math.pi * y / p + phase)) * 0.7
        elif kind == "dots":
            t = np.where(np.cos(2 * math.pi * x / p) * np.cos(2 * math.pi * y / p) > 0.55,
                         1.0, -0.25)
        elif kind == "grain":
            t = grain[m] * 1.2
        elif kind == "blotch":
            t = blotch[m] * 1.5
        else:
            t = blotch[m] * 0.3
        tex[m] = kit.amp[ci] * t
    rgb = kit.rgb[cmap] * (1.0 + tex)[..., None] * cv.shade[..., None]
    gain = rng.uniform(0.85, 1.15)
    cast = 1.0 + rng.uniform(-0.05, 0.05, 3).astype(np.float32)
    grad = 1.0 + rng.uniform(-0.12, 0.12) * (yy / h - 0.5) + rng.uniform(-0.08, 0.08) * (
        xx / w - 0.5)
    rgb = rgb * (gain * cast)[None, None, :] * grad[..., None]
    rgb += rng.normal(0, 0.022, rgb.shape).astype(np.float32)
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)
