"""The held-out sample set in Pascal VOC 2012's layout: ``VOCdevkit/VOC2012/JPEGImages/<id>.jpg``,
palette label maps in ``SegmentationClass/<id>.png`` and ``ImageSets/Segmentation/val.txt``.

Rooms, landscapes and streets labelled in VOC's 20 classes: a drawn concept takes the class
whose WordNet synset is its own or lies above it (through its ancestors in the tree: an
armchair is a chair, a bicyclist a person), and everything else is background, VOC's
everything-else class (a coffee table is no dining table, a van no car in WordNet). As in VOC,
a void band (255) runs along every object's outline. tests/test_heldout_formats.py checks this
table against WordNet.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dsspn_cli.data.sample.concepts import ConceptKit
from dsspn_cli.data.sample.layouts.encode import jpg_bytes, png_bytes, write_file
from dsspn_cli.data.sample.scenes import draw_scene

CLASSES = {
    "car": "car", "bus": "bus", "bicycle": "bicycle", "pedestrian": "person",
    "bicyclist": "person", "bird": "bird", "couch": "sofa", "armchair": "chair",
    "swivel chair": "chair", "cat": "cat", "dog": "dog", "horse": "horse", "cow": "cow",
}
BACKGROUND, VOID = 0, 255
VAL = 1                  # draw_scene's split number of a validation split


def palette(labelset) -> bytes:
    """VOC's palette from the label set's colours (void 224,224,192), black elsewhere."""
    colours = np.zeros((256, 3), np.uint8)
    for label in labelset.labels:
        colours[label.id] = label.extra["color"]
    return colours.tobytes()


def void_outlines(labels: np.ndarray, grow: int) -> np.ndarray:
    """``labels`` with VOID on every object's outline: the pixels on both sides of each edge
    between an object and anything else, widened by ``grow`` pixels each way."""
    objects = (labels != BACKGROUND) & (labels != VOID)
    edge = np.zeros(labels.shape, bool)
    vertical = (labels[1:] != labels[:-1]) & (objects[1:] | objects[:-1])
    edge[1:] |= vertical
    edge[:-1] |= vertical
    horizontal = (labels[:, 1:] != labels[:, :-1]) & (objects[:, 1:] | objects[:, :-1])
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    for _ in range(grow):
        grown = edge.copy()
        grown[1:] |= edge[:-1]
        grown[:-1] |= edge[1:]
        grown[:, 1:] |= edge[:, :-1]
        grown[:, :-1] |= edge[:, 1:]
        edge = grown
    return np.where(edge, VOID, labels).astype(np.uint8)


def write_voc(kit: ConceptKit, root: Path, seed, counts, size):
    """VOC's val split only (its test labels are not public; held-out sets are scored on
    val), as many images as every dataset's validation split."""
    from dsspn_cli.hierarchy.labelset import load_labelset

    labelset = load_labelset("voc")
    table = kit.table_of(labelset, CLASSES, BACKGROUND)
    colours = palette(labelset)
    # VOC's band is about 5 pixels wide on its ~500x375 images: here 2 pixels, 2 more
    # for every 300 pixels of the shorter side.
    grow = round(min(size) / 300)
    base = root / "VOCdevkit" / "VOC2012"
    ids = []
    for i in range(counts["val"]):
        image, cv = draw_scene(kit, "voc", VAL, i, seed, size)
        key = f"2012_{i + 1:06d}"
        write_file(base / "JPEGImages" / f"{key}.jpg", jpg_bytes(image))
        labels = void_outlines(table[cv.cmap], grow)
        write_file(base / "SegmentationClass" / f"{key}.png", png_bytes(labels, "P", colours))
        ids.append(key)
    write_file(base / "ImageSets" / "Segmentation" / "val.txt",
               "".join(f"{key}\n" for key in ids).encode("utf-8"))
    return {"val": counts["val"]}
