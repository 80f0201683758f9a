"""What the sample scenes are drawn in: the concepts each scene type renders, and the per-run
tables (``ConceptKit``) that give every concept its colour and texture, from its place in the
concept tree, and its label in each dataset."""

from __future__ import annotations

import colorsys

import numpy as np

from dsspn_cli.errors import UserError

# The tree's dataset names, in the order the datasets are written.
DATASETS = ("cityscapes", "ade", "coco", "mapillary")
# Held-out test sets written beside them (their label sets' names): drawn the same way,
# labelled in their own classes, never trained on (not datasets of the tree).
HELD_OUT = ("camvid", "voc")

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

TEXTURES = ("plain", "hstripes", "dots", "vstripes", "grain", "checker", "diag", "blotch")
GROUP_DEPTH = 3     # depth of the top-level groups that get a hue of their own


class ConceptKit:
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

    def table_of(self, labelset, classes: dict[str, str], rest: int) -> np.ndarray:
        """Concept index -> label id of a label set that is not in the tree (a held-out
        set): ``classes`` names the label of each scene concept it has a class for, every
        other drawn concept gets ``rest``, undrawn pixels the label set's ignore value."""
        ids = {label.name: label.id for label in labelset.labels}
        table = np.full(len(CONCEPTS) + 1, rest, np.uint8)
        for concept, name in classes.items():
            table[self.index[concept]] = ids[name]
        table[self.none] = labelset.ignore_index
        return table

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
