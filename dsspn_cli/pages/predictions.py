"""The page of a folder of predictions (``dsspn predict --html``): ``index.html`` beside the
outputs shows every image as a thumbnail; an image opened shows the photo, the prediction over
it and the tree of the concepts predicted with their pixel shares (click one: its pixels;
unfold it: its children's), each pixel's path from the root and confidence under the mouse,
and a slider that cuts the prediction at any depth.

What the page needs, written per image ``NAME`` beside its other outputs:

- ``NAME_thumb.jpg``: the overlay, at most ``THUMB`` pixels a side, for the gallery;
- ``NAME_photo.jpg``: the photo, shown under the prediction (the page only shows it, so a
  file does: no base64);
- ``NAME_page.js``: loaded only when the image is opened, one call
  ``dsspnImage(KEY, {"width", "height", "nodes", "confidence", "confidenceBlock"})`` with two
  PNGs as data URLs: ``nodes`` 8-bit RGB, ``red * 256 + green`` the pixel's node (blue 0), and
  ``confidence`` 8-bit grey, the mean confidence in percent of each block of
  ``confidenceBlock`` x ``confidenceBlock`` pixels (``CONFIDENCE_BLOCK``). Percent is as fine as
  a person reads it, and blocks of 2 are a third of the full map's bytes for what the model
  computed at a stride of 8 or 16 anyway; two images compress better than one of three
  channels, and a canvas reads neither 16-bit values nor an alpha channel exactly. Nodes are
  the tree's concept ids, then what the page adds for ``--classes`` (a class of several
  concepts, under the concept where their paths part; 'other', under the root). A pixel may
  hold any node, an inner concept too (a dataset's coarser label, a cut with ``--level``, a
  hedged answer): the page shows it as stopping there.

A script holding a data URL because a page opened from disk may not read the pixels of
another file (Chrome taints a canvas drawn from a ``file://`` image) but may run a script file,
and may read the pixels of an image it decoded from a data URL. ``index.html`` holds the nodes
(name, parent, colour, the dataset label or class written for it) and the list of images, so
it stays small for 500 images; each image's files are read when it is opened.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np

from dsspn_cli.files import atomic_write_bytes, atomic_write_text
from dsspn_cli.pages import build, data_json

PAGE = "index.html"
SUFFIXES = ("_page.js", "_thumb.jpg", "_photo.jpg")
THUMB = 320             # a thumbnail's longest side, pixels
PHOTO_QUALITY = 85      # JPEG quality of NAME_photo.jpg
THUMB_QUALITY = 80
TOP = 3                 # nodes named under a thumbnail
MAX_NODES = 1 << 16     # a node is written in two bytes
CONFIDENCE_BLOCK = 2    # the confidence map's pixels are blocks of 2 x 2


def _hex(rgb) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(c) for c in rgb))


def shared_path(paths: list[list[str]]) -> list[str]:
    """The part of tree paths (root first) that all share: a concept's own path, or a
    union's down to where its concepts' paths part (``Predictor.value_paths`` too)."""
    shared = []
    for step in zip(*paths):
        if len(set(step)) > 1:
            break
        shared.append(step[0])
    return shared


def shared_parent(tree, concepts) -> int:
    """The deepest concept above or at all of ``concepts`` (ids): where their paths part."""
    paths = [tree.ancestors(tree.names[c]) + [tree.names[c]] for c in sorted(concepts)]
    shared = shared_path(paths)
    return tree.id(shared[-1] if shared else tree.root)


def page_nodes(tree, palette, colours, value_names, value_label, classes=None,
               dataset: str | None = None,
               hedged: bool = False) -> tuple[list[dict], np.ndarray]:
    """The page's nodes and, per value of a predicted map, its node.

    Without ``classes`` a value is a concept id and its node that concept; with ``dataset``
    the concepts the dataset labels carry its label name and id (``label``, ``labelId``) and
    colour. With ``classes`` (a ``ClassChoice``) value k is class k: a class of one concept is
    that concept, named by the class; a class of several is a node of its own (``kind``
    union, with its ``concepts``) under the concept where their paths part; the last value,
    none of them, is the node 'other' under the root; ``hedged``, the values after it are the
    concepts a pixel stopped at above some classes (``MaskingTensors.hedged_vocabulary``), each
    its concept's node. ``palette``: a colour per concept id, ``colours`` per value."""
    names = tree.names
    nodes = []
    for i, name in enumerate(names):
        parent = tree.parent(name)
        nodes.append({"name": name, "parent": tree.id(parent) if parent is not None else None,
                      "colour": _hex(palette[i])})
    if classes is None:
        value_nodes = np.arange(len(names), dtype=np.int64)
        for concept, node in enumerate(nodes):
            node["colour"] = _hex(colours[concept])
            if dataset is not None and value_label[concept] >= 0:
                node["label"] = str(value_names[concept])
                node["labelId"] = int(value_label[concept])
        return nodes, value_nodes
    sets = classes.sets
    value_nodes = np.zeros(len(sets) + 1, dtype=np.int64)
    for k, concepts in enumerate(sets):
        extra = {"label": str(classes.names[k]), "labelId": int(classes.ids[k]),
                 "colour": _hex(colours[k])}
        if len(concepts) == 1:
            value_nodes[k] = next(iter(concepts))
            nodes[value_nodes[k]].update(extra)
        else:
            value_nodes[k] = len(nodes)
            nodes.append({"name": str(classes.names[k]), "kind": "union",
                          "parent": shared_parent(tree, concepts),
                          "concepts": [names[c] for c in sorted(concepts)], **extra})
    value_nodes[len(sets)] = len(nodes)
    nodes.append({"name": "other", "kind": "other", "parent": tree.id(tree.root),
                  "label": "other", "labelId": int(classes.other), "colour": "#000000"})
    if hedged:
        value_nodes = np.concatenate([value_nodes, np.arange(len(names), dtype=np.int64)])
    return nodes, value_nodes


def pixel_maps(nodes: np.ndarray, confidence: np.ndarray) -> tuple[bytes, bytes]:
    """The two PNGs of one image: its nodes and its confidence (see the module's doc)."""
    from PIL import Image

    if nodes.size and int(nodes.max()) >= MAX_NODES:
        raise ValueError(f"node {int(nodes.max())} does not fit the page's two bytes")
    rgb = np.zeros(nodes.shape + (3,), dtype=np.uint8)
    rgb[..., 0] = nodes >> 8
    rgb[..., 1] = nodes & 255
    return (_encoded(Image.fromarray(rgb), "PNG"),
            _encoded(Image.fromarray(block_percent(confidence), mode="L"), "PNG"))


def block_percent(confidence: np.ndarray, block: int = CONFIDENCE_BLOCK) -> np.ndarray:
    """The mean confidence in percent (uint8, 0-100) of each block x block pixels; a last
    row or column of blocks that the image only partly fills, of the pixels it has."""
    height, width = confidence.shape
    rows, cols = -(-height // block), -(-width // block)
    padded = np.pad(confidence.astype(np.float64),
                    ((0, rows * block - height), (0, cols * block - width)))
    counted = np.pad(np.ones(confidence.shape), ((0, rows * block - height),
                                                 (0, cols * block - width)))
    sums = padded.reshape(rows, block, cols, block).sum(axis=(1, 3))
    counts = counted.reshape(rows, block, cols, block).sum(axis=(1, 3))
    return np.clip(np.rint(100 * sums / counts), 0, 100).astype(np.uint8)


def _encoded(image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


class PredictionPages:
    """Writes each image's page data as it is predicted (``add``), and ``index.html`` at the
    end (``finish``). ``info``: what the page says about the run (mode, dataset, level,
    model)."""

    def __init__(self, out: Path, nodes: list[dict], value_nodes: np.ndarray, info: dict):
        self.out = Path(out)
        self.nodes = nodes
        self.value_nodes = value_nodes
        self.info = info
        self.images: list[dict] = []

    def add(self, stem: Path, source: Path, image: np.ndarray, values: np.ndarray,
            confidence: np.ndarray, overlay: np.ndarray) -> list[Path]:
        """Write ``stem``'s page data (``NAME_page.js``, ``NAME_thumb.jpg``,
        ``NAME_photo.jpg``) from the photo, the predicted map ``values`` (the predictor's
        values), its confidence and its overlay."""
        from PIL import Image

        nodes = self.value_nodes[values]
        height, width = values.shape
        key = stem.as_posix()
        node_png, confidence_png = pixel_maps(nodes, confidence)
        doc = {"width": int(width), "height": int(height),
               "nodes": _data_url(node_png, "image/png"),
               "confidence": _data_url(confidence_png, "image/png"),
               "confidenceBlock": CONFIDENCE_BLOCK}
        script = f"dsspnImage({data_json(key)}, {data_json(doc)});\n"
        thumb = Image.fromarray(overlay)
        thumb.thumbnail((THUMB, THUMB))
        counts = np.bincount(nodes.ravel(), minlength=len(self.nodes))
        top = sorted(np.flatnonzero(counts), key=lambda n: (-counts[n], n))[:TOP]
        self.images.append({
            "key": key, "name": source.name, "width": int(width), "height": int(height),
            "data": f"{key}{SUFFIXES[0]}", "thumb": f"{key}{SUFFIXES[1]}",
            "photo": f"{key}{SUFFIXES[2]}",
            "top": [[int(n), round(float(counts[n]) / nodes.size, 4)] for n in top]})
        base = self.out / stem
        # Nothing below the output folder (OUT/<city>) is followed if a link.
        return [atomic_write_text(f"{base}{SUFFIXES[0]}", script, within=self.out),
                atomic_write_bytes(f"{base}{SUFFIXES[1]}",
                                   _encoded(thumb.convert("RGB"), "JPEG", quality=THUMB_QUALITY),
                                   within=self.out),
                atomic_write_bytes(f"{base}{SUFFIXES[2]}",
                                   _encoded(Image.fromarray(image), "JPEG", quality=PHOTO_QUALITY),
                                   within=self.out)]

    def finish(self) -> Path:
        """Write ``index.html``: the nodes and the images added, in the order given."""
        doc = {**self.info, "nodes": self.nodes, "images": self.images}
        return atomic_write_text(self.out / PAGE, build("predictions.html", doc), within=self.out)


__all__ = ["PredictionPages", "page_nodes", "pixel_maps", "block_percent", "shared_parent",
           "shared_path", "PAGE", "SUFFIXES", "CONFIDENCE_BLOCK"]
