"""Built-in sample data: small procedural datasets in the real on-disk layouts of the four
built-in datasets (Cityscapes, ADE20K, COCO-Stuff 164k, Mapillary Vistas v1.2).

The images are drawn, not photographed. Each scene is first rendered as a per-pixel map of
concepts of the concept tree (mostly leaves: 'bicyclist', 'armchair', 'lane marking -
general'...), and every dataset then labels it at its own granularity and with its own ids:
a pixel of concept ``c`` gets the dataset's label of the nearest concept among ``c`` and its
ancestors that the dataset labels (Cityscapes says 'rider' for a bicyclist, ADE20K 'animal'
for a cat, COCO-Stuff 'chair' for an armchair), or the dataset's ignore value when none does.

Appearance follows the tree, so that learning the hierarchy helps: every concept's colour is
derived from its parent's (a hue per top-level group, children at small hue and brightness
offsets), so siblings look alike and are told apart by finer cues: a texture chosen by the
concept's place among its siblings (stripes, dots, checks, grain...) and shape (cars are low
boxes on two wheels, trucks a cab and a tall cargo box, buses long boxes with a row of
windows; cats, dogs, horses and cows are bodies of different proportions on legs of different
lengths). Each image gets its own lighting, colour cast and noise.

Scenes: streets (all four datasets), rooms and landscapes (ADE20K and COCO-Stuff only).

Layouts written under ``OUT`` (``write_sample_data``):

- ``cityscapes/leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png`` and
  ``cityscapes/gtFine/{train,val}/<city>/..._gtFine_labelIds.png`` / ``_labelTrainIds.png``;
- ``ade20k/ADEChallengeData2016/{images,annotations}/{training,validation}/ADE_*_<n>.jpg|png``;
- ``coco-stuff/images/{train2017,val2017}/<id>.jpg``,
  ``coco-stuff/stuffthingmaps_trainval2017/{train2017,val2017}/<id>.png`` and
  ``coco-stuff/annotations/{stuff,instances}_{train2017,val2017}.json``;
- ``mapillary/{training,validation}/{images,v1.2/labels}/<key>.jpg|png`` and
  ``mapillary/config_v1.2.json``.

COCO JSON: thing objects are polygons (``instances_*.json``), listed back to front; their
pixels in the PNG maps are pycocotools' own rasterisation of those polygons, and things are
drawn after all stuff, so painting the stuff RLEs (``stuff_*.json``) and then the instances in
file order, each with ``category_id - 1``, reproduces the PNG map on every labelled pixel (and
leaves exactly the 255 pixels unpainted). Category 183 'other' is listed in the stuff file as in
the real one, without annotations (the thing pixels it would cover are in the instances file).

Nothing here imports torch.
"""

from __future__ import annotations

import colorsys
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from dsspn_cli.errors import UserError, os_problem

# The tree's dataset names, in the order the datasets are written.
DATASETS = ("cityscapes", "ade", "coco", "mapillary")
FOLDERS = {"cityscapes": "cityscapes", "ade": "ade20k", "coco": "coco-stuff",
           "mapillary": "mapillary"}
README_MARK = "dsspn sample data"

# The concepts each scene type renders (names of the shipped tree).
STREET_CONCEPTS = (
    "sky-other", "building-other", "skyscraper", "house-other", "roof", "fence-other",
    "tree-other", "palm", "bush", "road", "lane marking - general", "lane marking - crosswalk",
    "crosswalk - plain", "bike lane", "curb", "pavement", "utility pole", "streetlight",
    "traffic sign frame", "traffic sign (front)", "traffic light", "car", "van", "truck-other",
    "bus", "bicycle", "pedestrian", "bicyclist", "bird",
)
INDOOR_CONCEPTS = (
    "wall-other", "wall-brick", "floor-wood", "floor-tile", "carpet", "ceiling-other",
    "windowpane", "curtain", "painting", "rug", "bed", "pillow", "couch", "armchair",
    "swivel chair", "coffee table", "lamp", "cat", "dog",
)
LANDSCAPE_CONCEPTS = (
    "sky-other", "clouds", "mountain", "grass", "sea", "sand", "tree-other", "palm", "bush",
    "horse", "cow", "dog", "bird",
)
SCENE_CONCEPTS = {"street": STREET_CONCEPTS, "indoor": INDOOR_CONCEPTS,
                  "landscape": LANDSCAPE_CONCEPTS}
CONCEPTS = tuple(dict.fromkeys(STREET_CONCEPTS + INDOOR_CONCEPTS + LANDSCAPE_CONCEPTS))

# Scene mix per dataset (street, indoor, landscape).
SCENE_MIX = {"cityscapes": (1.0, 0.0, 0.0), "mapillary": (1.0, 0.0, 0.0),
             "ade": (0.4, 0.4, 0.2), "coco": (0.4, 0.4, 0.2)}

CITIES = {"train": ("aachen", "bochum"), "val": ("frankfurt", "munster")}
KEY_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
TEXTURES = ("plain", "hstripes", "dots", "vstripes", "grain", "checker", "diag", "blotch")
GROUP_DEPTH = 3     # depth of the top-level groups that get a hue of their own


# ------------------------------------------------------------------------------ concept kit


class _Kit:
    """Per-run tables: concept colours and textures from the tree, label lookups per dataset."""

    def __init__(self, tree):
        from dsspn_cli.hierarchy.labelset import load_labelset

        missing = [d for d in DATASETS if d not in tree.datasets and not tree.concepts_of(d)]
        if missing:
            raise UserError(f"{tree.source or 'the tree'}: no labels of {', '.join(missing)}; "
                            "sample data needs a tree merged from coco, ade, cityscapes and "
                            "mapillary (the shipped tree)")
        self.tree = tree
        self.nodes = [self._resolve(name) for name in CONCEPTS]
        self.index = {name: i for i, name in enumerate(CONCEPTS)}
        self.none = len(CONCEPTS)       # 'nothing drawn here': ignore in every dataset

        self.labelsets = {}
        for ds in DATASETS:
            info = tree.datasets.get(ds) or {}
            self.labelsets[ds] = load_labelset(info.get("labelset", ds))
        self.ignore = {"cityscapes": 0, "ade": 0, "coco": 255, "mapillary": 65}
        self.lut = {}
        for ds in DATASETS:
            table = np.full(len(CONCEPTS) + 1, self.ignore[ds], np.uint8)
            for i, node in enumerate(self.nodes):
                label = self.label_of(node, ds)
                if label is not None:
                    table[i] = label
            self.lut[ds] = table
        city = self.labelsets["cityscapes"]
        train = np.full(256, 255, np.uint8)
        for label in city.labels:
            tid = label.extra.get("train_id", 255)
            if 0 <= label.id < 256 and isinstance(tid, int) and 0 <= tid < 255 and label.mapped:
                train[label.id] = tid
        self.train_ids = train
        coco = self.labelsets["coco"]
        thing_ids = {lab.id for lab in coco.labels if lab.extra.get("kind", "thing") == "thing"
                     and lab.id < 91}
        self.thing = np.array([int(v) in thing_ids for v in self.lut["coco"]])
        self.thing[self.none] = False
        self._colours()

    def _resolve(self, name: str) -> str | None:
        """The tree concept drawn for a scene concept: itself, or its nearest shipped ancestor."""
        if name in self.tree:
            return name
        if name.endswith("-other") and name[:-6] in self.tree:
            return name[:-6]
        from dsspn_cli.hierarchy.tree import load_tree

        shipped = load_tree()
        if name in shipped:
            for ancestor in reversed(shipped.ancestors(name)):
                if ancestor in self.tree:
                    return ancestor
        return None

    def label_of(self, node: str | None, dataset: str) -> int | None:
        """The dataset's label id of the nearest concept among node and its ancestors."""
        if node is None:
            return None
        for name in [node, *reversed(self.tree.ancestors(node))]:
            ids = self.tree.labels(name).get(dataset)
            if ids:
                return int(min(ids))
        return None

    def _colours(self):
        tree = self.tree
        hsv: dict[str, tuple[float, float, float]] = {tree.root: (0.08, 0.5, 0.6)}
        group = 0
        for name in tree.names[1:]:
            parent = tree.parent(name)
            siblings = tree.children(parent)
            i, n = siblings.index(name), len(siblings)
            c = (i - (n - 1) / 2) / max((n - 1) / 2, 1)        # -1 .. 1 across siblings
            alt = (0.0, 1.0, -1.0, 0.5, -0.5, 0.75, -0.75, 0.25, -0.25)[i % 9]
            h, s, v = hsv[parent]
            d = tree.depth(name)
            if d == 1:
                s = 0.5 - 0.17 * c              # things more saturated than stuff
            elif d == 2:
                v = 0.62 + 0.1 * c              # indoor darker than outdoor
            elif d == GROUP_DEPTH:
                h = (0.97 + group * 0.6180339887) % 1.0   # golden-ratio steps
                group += 1
            else:
                f = 0.6 ** (d - GROUP_DEPTH - 1)
                h = (h + 0.05 * f * c) % 1.0
                v = v + 0.16 * f * alt
                s = s - 0.1 * f * alt
            hsv[name] = (h, min(max(s, 0.15), 0.9), min(max(v, 0.25), 0.92))
        rgb = np.zeros((len(CONCEPTS) + 1, 3), np.float32)
        kind = np.zeros(len(CONCEPTS) + 1, np.int64)
        period = np.full(len(CONCEPTS) + 1, 4.0, np.float32)
        amp = np.full(len(CONCEPTS) + 1, 0.1, np.float32)
        rgb[self.none] = (0.5, 0.5, 0.5)
        for i, node in enumerate(self.nodes):
            if node is None:
                rgb[i] = (0.5, 0.5, 0.5)
                continue
            rgb[i] = colorsys.hsv_to_rgb(*hsv[node])
            parent = tree.parent(node)
            j = tree.children(parent).index(node) if parent else 0
            kind[i] = (j + (tree.id(parent) if parent else 0)) % len(TEXTURES)
            period[i] = 3.0 + (j * 3 + tree.depth(node)) % 5
            amp[i] = 0.1 + 0.04 * (j % 3)
        self.rgb, self.kind, self.period, self.amp = rgb, kind, period, amp
        self.hsv = hsv


# ------------------------------------------------------------------------------- geometry


def _rect(x0, y0, x1, y1):
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def _ngon(cx, cy, rx, ry=None, n=12, rot=0.0):
    ry = rx if ry is None else ry
    a = rot + np.arange(n) * (2 * math.pi / n)
    return np.stack([cx + rx * np.cos(a), cy + ry * np.sin(a)], 1).ravel().tolist()


def _seg(x0, y0, x1, y1, w):
    """A straight stroke of width w from (x0, y0) to (x1, y1), as a quad."""
    dx, dy = x1 - x0, y1 - y0
    norm = math.hypot(dx, dy) or 1.0
    nx, ny = -dy / norm * w / 2, dx / norm * w / 2
    return [x0 + nx, y0 + ny, x1 + nx, y1 + ny, x1 - nx, y1 - ny, x0 - nx, y0 - ny]


def _ring(cx, cy, r, w, n=12):
    a = np.arange(n + 1) * (2 * math.pi / n)
    xs, ys = cx + r * np.cos(a), cy + r * np.sin(a)
    return [_seg(xs[k], ys[k], xs[k + 1], ys[k + 1], w) for k in range(n)]


def _blob(rng, cx, cy, rx, ry=None, n=20, rough=0.18):
    ry = rx if ry is None else ry
    a = np.arange(n) * (2 * math.pi / n)
    k = rng.integers(3, 7)
    r = 1 + rough * (np.sin(k * a + rng.uniform(0, 6.3)) * 0.6 + rng.uniform(-1, 1, n) * 0.5)
    return np.stack([cx + rx * r * np.cos(a), cy + ry * r * np.sin(a)], 1).ravel().tolist()


def _place(polys, cx, yg, scale, flip=1.0):
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


def _car():
    wheels = [_ngon(-0.3, -0.1, 0.1, n=10), _ngon(0.3, -0.1, 0.1, n=10)]
    body = [_rect(-0.5, -0.3, 0.5, -0.08),
            [-0.3, -0.3, 0.32, -0.3, 0.18, -0.45, -0.16, -0.45], *wheels]
    details = [([[-0.25, -0.31, 0.27, -0.31, 0.16, -0.425, -0.13, -0.425]], 0.45),
               (wheels, 0.25), ([_ngon(-0.3, -0.1, 0.04, n=8), _ngon(0.3, -0.1, 0.04, n=8)],
                                2.2), ([_rect(0.46, -0.27, 0.5, -0.22)], 1.6)]
    return [("car", body, details)]


def _van():
    wheels = [_ngon(-0.3, -0.1, 0.1, n=10), _ngon(0.3, -0.1, 0.1, n=10)]
    body = [[-0.5, -0.08, 0.5, -0.08, 0.5, -0.4, 0.32, -0.62, -0.5, -0.62], *wheels]
    details = [([[0.33, -0.58, 0.46, -0.42, 0.33, -0.42]], 0.45),
                ([_rect(-0.45, -0.56, 0.27, -0.44)], 0.6), (wheels, 0.25)]
    return [("van", body, details)]


def _truck():
    wheels = [_ngon(x, -0.065, 0.065, n=10) for x in (-0.36, -0.2, 0.36)]
    body = [_rect(0.22, -0.42, 0.5, -0.1), _rect(-0.5, -0.55, 0.2, -0.12),
            _rect(-0.5, -0.14, 0.5, -0.07), *wheels]
    details = [([_rect(0.32, -0.38, 0.47, -0.27)], 0.45), (wheels, 0.25),
               ([_rect(-0.5, -0.55, 0.2, -0.5)], 0.8)]
    return [("truck-other", body, details)]


def _bus():
    wheels = [_ngon(-0.33, -0.045, 0.045, n=10), _ngon(0.33, -0.045, 0.045, n=10)]
    body = [_rect(-0.5, -0.3, 0.5, -0.035), *wheels]
    windows = [_rect(-0.46 + k * 0.125, -0.25, -0.46 + k * 0.125 + 0.095, -0.17)
               for k in range(7)]
    details = [(windows, 0.45), ([_rect(0.4, -0.16, 0.46, -0.045)], 0.6), (wheels, 0.25),
               ([_rect(-0.5, -0.08, 0.5, -0.06)], 1.4)]
    return [("bus", body, details)]


def _bicycle(w=0.045):
    parts = _ring(-0.33, -0.2, 0.18, w) + _ring(0.33, -0.2, 0.18, w)
    joints = [(-0.33, -0.2, -0.05, -0.46), (-0.05, -0.46, 0.27, -0.46),
              (0.27, -0.46, 0.33, -0.2), (-0.33, -0.2, 0.02, -0.2),
              (0.02, -0.2, -0.05, -0.46), (0.02, -0.2, 0.27, -0.46),
              (0.27, -0.46, 0.24, -0.58), (-0.1, -0.5, 0.0, -0.5)]
    parts += [_seg(*j, w) for j in joints]
    return [("bicycle", parts, [])]


def _bicyclist():
    body = [_seg(-0.05, -0.5, 0.1, -0.92, 0.16), _ngon(0.13, -1.02, 0.075, n=10),
            _seg(0.1, -0.88, 0.25, -0.6, 0.06), _seg(-0.05, -0.5, 0.08, -0.34, 0.08),
            _seg(0.08, -0.34, 0.02, -0.2, 0.07)]
    details = [([_ngon(0.13, -1.02, 0.075, n=10)], 1.25), ([body[3], body[4]], 0.7)]
    return _bicycle() + [("bicyclist", body, details)]


def _pedestrian(rng):
    stride = rng.uniform(0.0, 0.1)
    arm = rng.uniform(-0.05, 0.08)
    body = [_ngon(0, -0.92, 0.075, n=10), [-0.1, -0.84, 0.1, -0.84, 0.09, -0.45, -0.09, -0.45],
            _seg(-0.05, -0.46, -0.05 - stride, 0.0, 0.075),
            _seg(0.05, -0.46, 0.05 + stride, 0.0, 0.075),
            _seg(-0.11, -0.8, -0.15 - arm, -0.5, 0.05), _seg(0.11, -0.8, 0.15 + arm, -0.5, 0.05)]
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


def _animal(kind, rng):
    p = _ANIMALS[kind]
    bh, leg = p["bh"], p["leg"]
    cy = -leg - bh / 2 + 0.04
    body = [_ngon(0, cy, 0.5, bh / 2, n=16)]
    legs = [_rect(x - 0.045, cy, x + 0.045, 0) for x in (-0.36, -0.24, 0.24, 0.36)]
    hx, hy, hrx, hry = p["head"]
    head_y = cy - bh / 2 * hy
    head = _ngon(hx, head_y, hrx, hry, n=12, rot=-0.5 if kind == "horse" else 0.0)
    parts = body + legs + [head]
    if p["neck"]:
        parts.append(_seg(0.32, cy - 0.05, hx - 0.05, head_y, 0.16))
    tx, ty = p["tail"]
    parts.append(_seg(-0.46, cy - 0.05, tx, cy + ty * bh if ty < 0 else cy + 0.25, 0.05))
    if kind == "cat":
        parts += [[hx - 0.1, head_y - 0.06, hx - 0.04, head_y - 0.2, hx, head_y - 0.08],
                  [hx + 0.02, head_y - 0.08, hx + 0.08, head_y - 0.2, hx + 0.12, head_y - 0.05]]
    details = [(legs, 0.8), ([_ngon(hx + 0.05, head_y - 0.02, 0.025, n=6)], 0.3)]
    if kind == "cow":
        spots = [_ngon(rng.uniform(-0.35, 0.35), cy + rng.uniform(-0.12, 0.12),
                       rng.uniform(0.06, 0.12), rng.uniform(0.05, 0.09), n=8)
                 for _ in range(4)]
        details.append((spots, 0.35))
    if kind == "dog":
        details.append(([_ngon(hx - 0.05, head_y + 0.02, 0.05, 0.09, n=8)], 0.6))
    return [(kind, parts, details)]


def _bird(rng):
    up = rng.uniform(-0.35, 0.25)
    body = [_ngon(0, -0.1, 0.25, 0.09, n=10), [-0.1, -0.12, -0.45, -0.1 + up, 0.05, -0.08],
            [0.0, -0.12, 0.38, -0.1 + up, 0.1, -0.08], _ngon(0.27, -0.14, 0.07, n=8)]
    return [("bird", body, [([body[3]], 0.8)])]


def _tree(rng, kind):
    if kind == "palm":
        trunk = [_seg(0, 0, 0.05, -0.5, 0.05), _seg(0.05, -0.5, 0.08, -0.95, 0.045)]
        fronds = [_seg(0.08, -0.95, 0.08 + 0.35 * math.cos(a), -0.95 + 0.3 * math.sin(a) + 0.08,
                       0.07) for a in np.linspace(math.pi * 1.05, math.pi * 1.95, 6)]
        fronds += [_seg(0.08, -0.95, 0.08 + 0.3 * math.cos(a), -0.95 - 0.12 * math.sin(a),
                        0.07) for a in (0.2, math.pi - 0.2)]
        return [("palm", trunk + fronds, [(trunk, 0.65)])]
    trunk = [_rect(-0.04, -0.5, 0.04, 0)]
    crown = _blob(rng, 0, -0.72, 0.28, 0.3, rough=0.25)
    return [("tree-other", trunk + [crown], [(trunk, 0.55)])]


def _bed():
    bed = [[-0.5, -0.75, -0.42, -0.75, -0.42, -0.42, 0.5, -0.42, 0.5, -0.08, -0.5, -0.08],
           _rect(-0.48, -0.08, -0.43, 0), _rect(0.43, -0.08, 0.48, 0)]
    pillow = [_rect(-0.41, -0.53, -0.14, -0.42)]
    details = [([_rect(-0.42, -0.42, 0.5, -0.33)], 1.25), ([_rect(-0.1, -0.33, 0.5, -0.15)], 0.8)]
    return [("pillow", pillow, []), ("bed", bed, details)]


def _couch():
    body = [_rect(-0.5, -0.3, 0.5, -0.06), _rect(-0.42, -0.6, 0.42, -0.29),
            _rect(-0.5, -0.44, -0.38, -0.06), _rect(0.38, -0.44, 0.5, -0.06),
            _rect(-0.46, -0.06, -0.42, 0), _rect(0.42, -0.06, 0.46, 0)]
    seams = [_rect(-0.005, -0.6, 0.005, -0.06), _rect(-0.38, -0.31, 0.38, -0.28)]
    return [("couch", body, [(seams, 0.6), ([body[1]], 0.9)])]


def _armchair():
    body = [_rect(-0.5, -0.36, 0.5, -0.1), _rect(-0.36, -0.85, 0.36, -0.34),
            _rect(-0.5, -0.56, -0.3, -0.1), _rect(0.3, -0.56, 0.5, -0.1),
            _rect(-0.45, -0.1, -0.38, 0), _rect(0.38, -0.1, 0.45, 0)]
    return [("armchair", body, [([body[2], body[3]], 0.8)])]


def _swivel_chair():
    body = [_rect(-0.35, -0.5, 0.35, -0.42), [-0.25, -1.0, 0.25, -1.0, 0.22, -0.58, -0.22, -0.58],
            _rect(-0.05, -0.58, 0.05, -0.5), _rect(-0.035, -0.42, 0.035, -0.1),
            _seg(0, -0.1, -0.4, -0.05, 0.05), _seg(0, -0.1, 0.4, -0.05, 0.05),
            _seg(0, -0.1, -0.15, -0.03, 0.05), _seg(0, -0.1, 0.15, -0.03, 0.05),
            _ngon(-0.4, -0.035, 0.035, n=8), _ngon(0.4, -0.035, 0.035, n=8),
            _ngon(-0.15, -0.03, 0.03, n=8), _ngon(0.15, -0.03, 0.03, n=8)]
    return [("swivel chair", body, [(body[2:], 0.4)])]


def _coffee_table():
    body = [_rect(-0.5, -0.36, 0.5, -0.28), _rect(-0.46, -0.28, -0.41, 0),
            _rect(0.41, -0.28, 0.46, 0), _rect(-0.3, -0.3, 0.3, -0.22)]
    return [("coffee table", body, [([body[0]], 1.2)])]


def _lamp():
    body = [_ngon(0, -0.02, 0.12, 0.025, n=10), _rect(-0.018, -0.82, 0.018, -0.02),
            [-0.13, -0.8, 0.13, -0.8, 0.08, -1.0, -0.08, -1.0]]
    return [("lamp", body, [([body[2]], 1.5)])]


# ------------------------------------------------------------------------------- canvas


class _Canvas:
    def __init__(self, kit: _Kit, h: int, w: int, rng):
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
            placed = _place(polys, cx, yg, scale, flip)
            pdetails = [(_place(d, cx, yg, scale, flip), f) for d, f in details]
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


# ------------------------------------------------------------------------------- scenes


def _street(cv: _Canvas):
    rng, h, w = cv.rng, cv.h, cv.w
    yh = h * rng.uniform(0.36, 0.48)
    xv = w * rng.uniform(0.35, 0.65)
    base = yh + 0.02 * h
    cv.paint("sky-other", _rect(0, 0, w, base))
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
        cv.paint(str(kind), _rect(x, top, x + bw, base), [(windows, 0.55)])
        if kind == "house-other":
            cv.paint("roof", [[x - 1, top + 1, x + bw + 1, top + 1,
                               x + bw * 0.8, top - h * rng.uniform(0.04, 0.09),
                               x + bw * 0.2, top - h * rng.uniform(0.04, 0.09)]])
        x += bw
    if rng.random() < 0.4:
        slats = (xx % 4 == 0)
        cv.paint("fence-other", _rect(0, base - 0.06 * h, w, base), [(slats, 0.6)])
    cv.paint("pavement", _rect(0, base, w, h))

    span = h - yh
    xl, xr = xv - w * rng.uniform(0.5, 0.9), xv + w * rng.uniform(0.5, 0.9)

    def road_x(f, y):
        t = (y - yh) / span
        return (1 - t) * xv + t * (xl + f * (xr - xl))

    def strip(f0, f1, y0=yh, y1=h):
        return [road_x(f0, y0), y0, road_x(f1, y0), y0, road_x(f1, y1), y1, road_x(f0, y1), y1]

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

    ppm = 0.5 * h / 1.7 / span       # px per metre per px below the horizon

    def sidewalk_x(y, margin):
        left = (0.0 + margin, road_x(-0.06, y) - margin)
        right = (road_x(1.06, y) + margin, w - margin)
        spans = [s for s in (left, right) if s[1] - s[0] > 1]
        if not spans:
            return None
        s = spans[int(rng.integers(len(spans)))]
        return rng.uniform(*s)

    for _ in range(int(rng.integers(0, 4))):                      # trees and bushes
        y = base + span * rng.uniform(0.0, 0.25)
        x = sidewalk_x(y, 2)
        if x is None:
            continue
        scale = max(ppm * (y - yh) * rng.uniform(6, 10), 0.3 * h)
        cv.add(_tree(rng, "palm" if rng.random() < 0.2 else "tree"), x, y, scale)
    for _ in range(int(rng.integers(0, 3))):
        y = base + span * rng.uniform(0.0, 0.08)
        x = rng.uniform(0, w)
        r = h * rng.uniform(0.04, 0.08)
        cv.add([("bush", [_blob(rng, 0, -r * 0.8, r * 1.6, r, rough=0.2)], [])], x, y, 1.0)
    for _ in range(int(rng.integers(1, 4))):                      # poles, signs, lights
        y = yh + span * rng.uniform(0.1, 0.5)
        x = sidewalk_x(y, 1)
        if x is None:
            continue
        scale = ppm * (y - yh)
        kind = rng.choice(["pole", "light", "sign", "traffic"])
        flip = 1.0 if x < road_x(0.5, y) else -1.0
        if kind == "pole":
            cv.add([("utility pole", [_rect(-0.15, -9, 0.15, 0)], [])], x, y, scale)
        elif kind == "light":
            cv.add([("utility pole", [_rect(-0.12, -7, 0.12, 0), _seg(0, -6.9, 1.6, -7.1, 0.15)],
                     []), ("streetlight", [_ngon(1.7, -7.0, 0.5, 0.2, n=8)], [])],
                   x, y, scale, flip)
        elif kind == "sign":
            shape = rng.integers(3)
            if shape == 0:
                plate = _ngon(0, -2.6, 0.45, n=12)
            elif shape == 1:
                plate = [-0.5, -2.3, 0.5, -2.3, 0, -3.1]
            else:
                plate = _rect(-0.4, -3.0, 0.4, -2.2)
            cv.add([("traffic sign frame", [_rect(-0.06, -2.3, 0.06, 0)], []),
                    ("traffic sign (front)", [plate], [([_ngon(0, -2.6, 0.22, n=10)], 0.6)])],
                   x, y, scale)
        else:
            head = _rect(-0.25, -4.6, 0.25, -3.3)
            lit = rng.integers(3)
            lamps = [(_ngon(0, -4.4 + k * 0.42, 0.15, n=8), 2.0 if k == lit else 0.5)
                     for k in range(3)]
            cv.add([("utility pole", [_rect(-0.1, -3.4, 0.1, 0)], []),
                    ("traffic light", [head], [([p], f) for p, f in lamps])], x, y, scale)
    vehicles = {"car": (_car, 4.3), "van": (_van, 4.8), "truck": (_truck, 7.5),
                "bus": (_bus, 11.0), "bike": (_bicyclist, 1.8)}
    for _ in range(int(rng.integers(1, 5))):                      # vehicles on the road
        kind = str(rng.choice(list(vehicles), p=[0.45, 0.15, 0.13, 0.12, 0.15]))
        make, length = vehicles[kind]
        tmax = 0.3 if kind in ("bus", "truck") else 0.45
        y = yh + span * rng.uniform(0.1, tmax)
        x = rng.uniform(road_x(0.1, y), road_x(0.9, y))
        flip = 1.0 if rng.random() < 0.5 else -1.0
        cv.add(make(), x, y, ppm * (y - yh) * length, flip)
    for _ in range(int(rng.integers(0, 5))):                      # pedestrians
        y = yh + span * rng.uniform(0.15, 0.7)
        x = sidewalk_x(y, 2)
        if x is None:
            continue
        cv.add(_pedestrian(rng), x, y, ppm * (y - yh) * rng.uniform(1.6, 1.9),
               1.0 if rng.random() < 0.5 else -1.0)
    if rng.random() < 0.3:                                        # a parked bicycle
        y = yh + span * rng.uniform(0.2, 0.6)
        x = sidewalk_x(y, 4)
        if x is not None:
            cv.add(_bicycle(), x, y, ppm * (y - yh) * 1.8)
    if rng.random() < 0.3:
        for _ in range(int(rng.integers(1, 3))):
            cv.add(_bird(rng), w * rng.uniform(0.1, 0.9), yh * rng.uniform(0.2, 0.7),
                   h * rng.uniform(0.06, 0.1), 1.0 if rng.random() < 0.5 else -1.0)
    cv.finish()


def _indoor(cv: _Canvas):
    rng, h, w = cv.rng, cv.h, cv.w
    bx0, bx1 = w * rng.uniform(0.18, 0.3), w * rng.uniform(0.7, 0.82)
    by0, by1 = h * rng.uniform(0.12, 0.25), h * rng.uniform(0.55, 0.66)
    wall = str(rng.choice(["wall-other", "wall-brick"]))
    yy, xx = np.mgrid[0:h, 0:w]
    cv.paint("ceiling-other", [[0, 0, w, 0, bx1, by0, bx0, by0]])
    cv.paint(str(rng.choice(["floor-wood", "floor-tile", "carpet"])),
             [[bx0, by1, bx1, by1, w, h, 0, h]])
    cv.paint(wall, [[0, 0, bx0, by0, bx0, by1, 0, h], [w, 0, w, h, bx1, by1, bx1, by0],
                    _rect(bx0, by0, bx1, by1)])
    bw, bh = bx1 - bx0, by1 - by0
    if rng.random() < 0.8:                                         # window and curtains
        wx0 = bx0 + bw * rng.uniform(0.05, 0.55)
        wx1 = wx0 + bw * rng.uniform(0.2, 0.35)
        wy0, wy1 = by0 + bh * 0.12, by0 + bh * rng.uniform(0.55, 0.75)
        bars = [_rect((wx0 + wx1) / 2 - 0.7, wy0, (wx0 + wx1) / 2 + 0.7, wy1),
                _rect(wx0, (wy0 + wy1) / 2 - 0.7, wx1, (wy0 + wy1) / 2 + 0.7)]
        cv.paint("windowpane", [_rect(wx0, wy0, wx1, wy1)], [([_rect(wx0, wy0, wx1, wy1)], 1.3),
                                                             (bars, 0.4)])
        if rng.random() < 0.6:
            cw = bw * 0.07
            cv.paint("curtain", [_rect(wx0 - cw, wy0 - 2, wx0 + 1, wy1 + 0.1 * bh),
                                 _rect(wx1 - 1, wy0 - 2, wx1 + cw, wy1 + 0.1 * bh)])
    if rng.random() < 0.6:                                         # a painting on a side wall
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
    fh = h - by1

    def unit(y):
        return h * (0.45 + 0.55 * (y - by1) / fh)

    if rng.random() < 0.5:                                         # rug
        y0, y1 = by1 + fh * rng.uniform(0.3, 0.5), by1 + fh * rng.uniform(0.75, 0.95)
        cx = w * rng.uniform(0.35, 0.65)
        cv.paint("rug", [[cx - w * 0.15, y0, cx + w * 0.15, y0, cx + w * 0.22, y1,
                          cx - w * 0.22, y1]])
    room = rng.choice(["bedroom", "living", "office"])
    pet_z = None
    if room == "bedroom":
        y = by1 + fh * rng.uniform(0.1, 0.3)
        x = w * rng.uniform(0.35, 0.6)
        s = unit(y) * 0.9
        flip = 1.0 if rng.random() < 0.5 else -1.0
        cv.add(_bed(), x, y, s, flip)
        pet_z = (x + flip * s * rng.uniform(-0.1, 0.3), y - 0.42 * s, y + 0.5)
        lx = x - flip * s * 0.62
        cv.add(_lamp(), lx, y - 2, unit(y) * 0.5)
    elif room == "living":
        y = by1 + fh * rng.uniform(0.05, 0.2)
        x = w * rng.uniform(0.4, 0.6)
        s = unit(y) * 0.8
        cv.add(_couch(), x, y, s)
        pet_z = (x + s * rng.uniform(-0.3, 0.3), y - 0.3 * s, y + 0.5)
        y2 = by1 + fh * rng.uniform(0.45, 0.7)
        side = 1.0 if rng.random() < 0.5 else -1.0
        cv.add(_armchair(), w * (0.5 + side * rng.uniform(0.28, 0.36)), y2, unit(y2) * 0.38)
        y3 = by1 + fh * rng.uniform(0.5, 0.8)
        cv.add(_coffee_table(), w * 0.5 - side * w * rng.uniform(0.0, 0.15), y3,
               unit(y3) * 0.45)
        cv.add(_lamp(), x - side * s * 0.65, y - 1, unit(y) * 0.55)
    else:
        for _ in range(int(rng.integers(1, 3))):
            y = by1 + fh * rng.uniform(0.25, 0.85)
            cv.add(_swivel_chair(), w * rng.uniform(0.15, 0.85), y, unit(y) * 0.5,
                   1.0 if rng.random() < 0.5 else -1.0)
        y = by1 + fh * rng.uniform(0.05, 0.2)
        cv.add(_coffee_table(), w * rng.uniform(0.3, 0.7), y, unit(y) * 0.6)
        cv.add(_lamp(), w * rng.uniform(0.1, 0.9), y - 1, unit(y) * 0.6)
    if rng.random() < 0.65:                                        # a pet
        kind = str(rng.choice(["cat", "dog"]))
        size = 0.2 if kind == "cat" else 0.3
        flip = 1.0 if rng.random() < 0.5 else -1.0
        if pet_z is not None and rng.random() < 0.5:
            x, y, z = pet_z
            cv.add(_animal(kind, rng), x, y, unit(z) * size * 0.9, flip, z=z)
        else:
            y = by1 + fh * rng.uniform(0.4, 0.95)
            cv.add(_animal(kind, rng), w * rng.uniform(0.15, 0.85), y, unit(y) * size, flip)
    cv.finish()


def _landscape(cv: _Canvas):
    rng, h, w = cv.rng, cv.h, cv.w
    yh = h * rng.uniform(0.4, 0.55)
    cv.paint("sky-other", _rect(0, 0, w, yh + 1))
    for _ in range(int(rng.integers(0, 4))):
        cv.paint("clouds", [_blob(rng, w * rng.uniform(0, 1), yh * rng.uniform(0.1, 0.5),
                                  w * rng.uniform(0.06, 0.14), h * rng.uniform(0.04, 0.08))])
    n = 14
    xs = np.linspace(-w * 0.05, w * 1.05, n)
    heights = np.abs(np.cumsum(rng.normal(0, 0.08, n))) + rng.uniform(0.05, 0.2)
    ridge = np.stack([xs, yh - h * np.clip(heights, 0.03, 0.35)], 1).ravel().tolist()
    cv.paint("mountain", [[-w * 0.05, yh + 1, *ridge, w * 1.05, yh + 1]],
             [([[-w * 0.05, yh + 1, *ridge, w * 1.05, yh + 1]], 1.0)])
    cv.paint("grass", _rect(0, yh, w, h))
    beach = rng.random() < 0.5
    ground_top = yh
    if beach:
        ys = yh + h * rng.uniform(0.08, 0.2)
        cv.paint("sea", _rect(0, yh, w, ys))
        ye = ys + h * rng.uniform(0.08, 0.18)
        cv.paint("sand", [[0, ys, w, ys, w, ye + h * 0.03, 0, ye - h * 0.03]])
        ground_top = ye
    span = h - yh
    for _ in range(int(rng.integers(0, 4))):
        y = ground_top + (h - ground_top) * rng.uniform(0.0, 0.3)
        kind = "palm" if beach and rng.random() < 0.6 else "tree"
        cv.add(_tree(rng, kind), w * rng.uniform(0, 1), y, h * (0.35 + 0.6 * (y - yh) / span))
    for _ in range(int(rng.integers(0, 3))):
        y = ground_top + (h - ground_top) * rng.uniform(0.0, 0.3)
        r = h * rng.uniform(0.04, 0.08)
        cv.add([("bush", [_blob(rng, 0, -r * 0.8, r * 1.6, r)], [])], w * rng.uniform(0, 1),
               y, 1.0)
    sizes = {"horse": 2.4, "cow": 2.4, "dog": 0.9}
    for _ in range(int(rng.integers(1, 4))):
        kind = str(rng.choice(list(sizes), p=[0.4, 0.4, 0.2]))
        y = ground_top + (h - ground_top) * rng.uniform(0.2, 0.9)
        scale = sizes[kind] * h * 0.12 * (0.4 + (y - yh) / span)
        cv.add(_animal(kind, rng), w * rng.uniform(0.1, 0.9), y, scale,
               1.0 if rng.random() < 0.5 else -1.0)
    for _ in range(int(rng.integers(0, 3))):
        cv.add(_bird(rng), w * rng.uniform(0.05, 0.95), yh * rng.uniform(0.15, 0.6),
               h * rng.uniform(0.05, 0.1), 1.0 if rng.random() < 0.5 else -1.0)
    cv.finish()


_SCENES = {"street": _street, "indoor": _indoor, "landscape": _landscape}


# ------------------------------------------------------------------------------ rendering


def _upsample(rng, h, w, cell):
    small = rng.uniform(-1, 1, (max(2, h // cell + 2), max(2, w // cell + 2))).astype(np.float32)
    img = Image.fromarray(small, mode="F").resize((w + 2 * cell, h + 2 * cell), Image.BILINEAR)
    return np.asarray(img, np.float32)[cell:cell + h, cell:cell + w]


def _render(cv: _Canvas) -> np.ndarray:
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


def _draw(kit: _Kit, dataset: str, split: int, index: int, seed: int, size):
    """One scene: (RGB image, concept map, canvas) for image ``index`` of a split."""
    rng = np.random.default_rng(np.random.SeedSequence(
        [seed % 2**63, DATASETS.index(dataset), split, index]))
    kinds = list(_SCENES)
    scene = kinds[int(rng.choice(len(kinds), p=SCENE_MIX[dataset]))]
    cv = _Canvas(kit, size[0], size[1], rng)
    _SCENES[scene](cv)
    return _render(cv), cv


# ------------------------------------------------------------------------------- writing


def _png(arr: np.ndarray, mode: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def _jpg(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode="RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _json(obj) -> bytes:
    return (json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")


def _write_cityscapes(kit, root: Path, seed, counts, size):
    summary = {}
    for s, split in enumerate(("train", "val")):
        cities = CITIES[split]
        for i in range(counts[split]):
            image, cv = _draw(kit, "cityscapes", s, i, seed, size)
            city = cities[i % len(cities)]
            stem = f"{city}_{i // len(cities):06d}_000019"
            ids = kit.lut["cityscapes"][cv.cmap]
            _write(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
                   _png(image, "RGB"))
            gt = root / "gtFine" / split / city
            _write(gt / f"{stem}_gtFine_labelIds.png", _png(ids, "L"))
            _write(gt / f"{stem}_gtFine_labelTrainIds.png", _png(kit.train_ids[ids], "L"))
        summary[split] = counts[split]
    return summary


def _write_ade(kit, root: Path, seed, counts, size):
    summary = {}
    base = root / "ADEChallengeData2016"
    for s, (split, folder, tag) in enumerate((("train", "training", "train"),
                                              ("val", "validation", "val"))):
        for i in range(counts[split]):
            image, cv = _draw(kit, "ade", s, i, seed, size)
            stem = f"ADE_{tag}_{i + 1:08d}"
            _write(base / "images" / folder / f"{stem}.jpg", _jpg(image))
            _write(base / "annotations" / folder / f"{stem}.png",
                   _png(kit.lut["ade"][cv.cmap], "L"))
        summary[split] = counts[split]
    return summary


def _coco_categories(kit):
    coco = kit.labelsets["coco"]
    things, stuff = [], []
    for label in sorted(coco.labels, key=lambda item: item.id):
        if not label.mapped:
            continue
        entry = {"supercategory": label.extra.get("supercategory", ""), "id": label.id + 1,
                 "name": label.name}
        (things if label.id < 91 else stuff).append(entry)
    stuff.append({"supercategory": "other", "id": 183, "name": "other"})
    return things, stuff


def _write_coco(kit, root: Path, seed, counts, size):
    summary = {}
    h, w = size
    things, stuff = _coco_categories(kit)
    stuff_ids = {c["id"] - 1 for c in stuff if c["id"] != 183}
    total = counts["train"] + counts["val"]
    id_rng = np.random.default_rng(np.random.SeedSequence([seed % 2**63, 99]))
    all_ids = id_rng.choice(581929, size=total, replace=False) + 1
    ids = {"train": sorted(int(v) for v in all_ids[:counts["train"]]),
           "val": sorted(int(v) for v in all_ids[counts["train"]:])}
    info = {"description": "dsspn procedural sample data in the COCO-Stuff 164k layout "
                           "(drawn scenes, not real photos)", "version": "1.0", "year": 2017,
            "contributor": "dsspn", "url": "", "date_created": ""}
    for s, (split, folder) in enumerate((("train", "train2017"), ("val", "val2017"))):
        images, inst_anns, stuff_anns = [], [], []
        for i in range(counts[split]):
            image, cv = _draw(kit, "coco", s, i, seed, size)
            image_id = ids[split][i]
            name = f"{image_id:012d}"
            labels = kit.lut["coco"][cv.cmap]
            _write(root / "images" / folder / f"{name}.jpg", _jpg(image))
            _write(root / "stuffthingmaps_trainval2017" / folder / f"{name}.png",
                   _png(labels, "L"))
            images.append({"license": 0, "file_name": f"{name}.jpg", "coco_url": "",
                           "height": h, "width": w, "date_captured": "", "flickr_url": "",
                           "id": image_id})
            for ci, polys, mask in cv.instances:
                rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
                bbox = [round(float(v), 2) for v in mask_utils.toBbox(rle)]
                inst_anns.append({"segmentation": polys, "area": int(mask.sum()),
                                  "iscrowd": 0, "image_id": image_id, "bbox": bbox,
                                  "category_id": int(kit.lut["coco"][ci]) + 1,
                                  "id": len(inst_anns) + 1})
            for label in np.unique(labels):
                if int(label) not in stuff_ids:
                    continue
                mask = np.asfortranarray((labels == label).astype(np.uint8))
                rle = mask_utils.encode(mask)
                bbox = [round(float(v), 2) for v in mask_utils.toBbox(rle)]
                stuff_anns.append({"segmentation": {"size": [h, w],
                                                    "counts": rle["counts"].decode("ascii")},
                                   "area": int(mask.sum()), "iscrowd": 0,
                                   "image_id": image_id, "bbox": bbox,
                                   "category_id": int(label) + 1,
                                   "id": 10_000_000 + len(stuff_anns) + 1})
        ann = root / "annotations"
        _write(ann / f"instances_{folder}.json", _json({
            "info": info, "licenses": [], "images": images, "annotations": inst_anns,
            "categories": things}))
        _write(ann / f"stuff_{folder}.json", _json({
            "info": info, "licenses": [], "images": images, "annotations": stuff_anns,
            "categories": stuff}))
        summary[split] = counts[split]
    return summary


def _mapillary_config(kit) -> dict:
    labels = []
    for label in sorted(kit.labelsets["mapillary"].labels, key=lambda item: item.id):
        labels.append({"name": label.name, "readable": label.extra.get("readable", label.name),
                       "color": list(label.extra.get("color", [0, 0, 0])),
                       "instances": bool(label.extra.get("instances", False)),
                       "evaluate": bool(label.extra.get("evaluate", True))})
    return {"labels": labels}


def _write_mapillary(kit, root: Path, seed, counts, size):
    summary = {}
    _write(root / "config_v1.2.json", (json.dumps(_mapillary_config(kit), indent=2) + "\n")
           .encode("utf-8"))
    for s, (split, folder) in enumerate((("train", "training"), ("val", "validation"))):
        for i in range(counts[split]):
            image, cv = _draw(kit, "mapillary", s, i, seed, size)
            key_rng = np.random.default_rng(np.random.SeedSequence([seed % 2**63, 3, s, i, 7]))
            key = "".join(KEY_ALPHABET[k] for k in key_rng.integers(0, len(KEY_ALPHABET), 22))
            _write(root / folder / "images" / f"{key}.jpg", _jpg(image))
            _write(root / folder / "v1.2" / "labels" / f"{key}.png",
                   _png(kit.lut["mapillary"][cv.cmap], "L"))
        summary[split] = counts[split]
    return summary


_WRITERS = {"cityscapes": _write_cityscapes, "ade": _write_ade, "coco": _write_coco,
            "mapillary": _write_mapillary}


def _readme(seed, counts, size) -> str:
    return f"""{README_MARK}: procedural scenes, NOT real photos
(written by dsspn_cli.data.sample.write_sample_data, seed {seed}, {counts['train']} train and
{counts['val']} val images per dataset, {size[0]}x{size[1]} pixels).

Drawn streets, rooms and landscapes, labelled in the real on-disk layouts of four datasets so
that every loader and command can be tried without downloading anything:

  cityscapes/   leftImg8bit/ + gtFine/ (labelIds, labelTrainIds)      Cityscapes (fine)
  ade20k/       ADEChallengeData2016/images + annotations             ADE20K SceneParsing 150
  coco-stuff/   images/, stuffthingmaps_trainval2017/, annotations/   COCO-Stuff 164k
  mapillary/    training|validation/images + v1.2/labels, config      Mapillary Vistas v1.2

Each scene is drawn as a map of concepts of the dsspn concept tree, and each dataset labels it
at its own granularity with its own ids (Cityscapes 'rider' where Mapillary says 'bicyclist',
ADE20K 'animal' where COCO-Stuff says 'cat'). Colours follow the tree (siblings look alike);
textures and shapes tell siblings apart. Useful for smoke tests and demos, not for accuracy.
"""


MIN_SIDE = 32                   # the smallest scene the drawing routines lay out
MAX_PIXELS = 4096 * 4096        # drawing takes about 130 bytes a pixel: 2 GiB at this size


def check_size(size, option: str = "size") -> tuple[int, int]:
    """(height, width) of the sample images, within the bounds the writer works in: checked
    before anything is written."""
    try:
        height, width = (int(v) for v in size)
    except (TypeError, ValueError):
        raise UserError(f"{option} must be (height, width), got {size!r}") from None
    if height < MIN_SIDE or width < MIN_SIDE:
        raise UserError(f"{option} {height}x{width} is too small; use at least "
                        f"{MIN_SIDE}x{MIN_SIDE} pixels")
    if height * width > MAX_PIXELS:
        raise UserError(f"{option} {height}x{width} is too large for sample data (drawing "
                        f"takes about {130 * height * width / 2**30:.0f} GiB); use at most "
                        f"{MAX_PIXELS:,} pixels, like 1024x2048")
    return height, width


def write_sample_data(out, seed: int = 0, images: int = 16, size=(128, 256),
                      tree=None) -> dict:
    """Write the sample datasets under ``out``; returns ``{dataset: {split: count}}``.

    ``images`` images per dataset in train and ``max(2, images // 4)`` in val; ``size`` is
    (height, width). The same arguments give byte-identical files. Everything is written into a
    staging folder inside ``out`` and moved into place at the end, so an interrupted run leaves
    no half dataset; an earlier sample in ``out`` is replaced, other data is never overwritten.
    """
    from dsspn_cli.files import check_output

    if isinstance(images, bool) or not isinstance(images, int) or images < 1:
        raise UserError(f"images must be a positive whole number, got {images!r}")
    height, width = check_size(size)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise UserError(f"seed must be a whole number, got {seed!r}")
    seed = int(seed)
    if tree is None:
        from dsspn_cli.hierarchy.tree import load_tree

        tree = load_tree()
    kit = _Kit(tree)
    counts = {"train": images, "val": max(2, images // 4)}

    out = check_output(out, folder=True)
    names = ["README.txt"] + [FOLDERS[d] for d in DATASETS]
    readme = out / "README.txt"
    ours = readme.is_file() and readme.read_text(errors="replace").startswith(README_MARK)
    clash = [n for n in names if (out / n).exists()]
    if clash and not ours:
        raise UserError(f"{out}: already holds {', '.join(clash)} that dsspn did not write; "
                        "choose an empty folder (sample data never overwrites other data)")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".dsspn-sample-", dir=out))
    except OSError as exc:
        raise UserError(f"{out}: cannot write: {os_problem(exc)}") from None
    finished = False
    try:
        summary = {}
        for ds in DATASETS:
            summary[ds] = _WRITERS[ds](kit, staging / FOLDERS[ds], seed, counts,
                                       (height, width))
        (staging / "README.txt").write_text(_readme(seed, counts, (height, width)),
                                            encoding="utf-8")
        old = staging / ".replaced"
        old.mkdir()
        for name in names:
            target = out / name
            if target.exists():
                os.replace(target, old / name)
            os.replace(staging / name, target)
        finished = True
    except OSError as exc:
        raise UserError(f"{out}: cannot write the sample data: {os_problem(exc)}") from None
    except MemoryError:
        raise UserError(f"{out}: out of memory drawing {height}x{width} images; use a smaller "
                        "--size") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not finished:         # nothing half-written, not even a folder
            shutil.rmtree(out, ignore_errors=True)
    return summary


def sample_datasets(root: str | Path | None = None) -> dict[str, str]:
    """The sample datasets under ``root`` (default: dsspn's cache), as ``{format: folder}``,
    the way training and evaluation take data."""
    root = Path(root) if root is not None else default_sample_root()
    return {dataset: str(root / FOLDERS[dataset]) for dataset in DATASETS}


def default_sample_root() -> Path:
    """Where training and evaluation without data find the sample data (written once)."""
    from dsspn_cli.hierarchy.wordnet import cache_dir

    return cache_dir() / "sample-data"


def ensure_sample_data(root: str | Path | None = None) -> dict[str, str]:
    """The sample datasets, written first if they are not there yet."""
    root = Path(root) if root is not None else default_sample_root()
    if not (root / "README.txt").is_file():
        write_sample_data(root)
    return sample_datasets(root)
