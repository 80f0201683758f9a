"""The sample data in Mapillary Vistas v1.2's layout: ``{training,validation}/images/<key>.jpg``,
``{training,validation}/v1.2/labels/<key>.png`` and ``config_v1.2.json``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dsspn_cli.data.sample.concepts import ConceptKit
from dsspn_cli.data.sample.layouts.encode import jpg_bytes, png_bytes, write_file
from dsspn_cli.data.sample.scenes import draw_scene

KEY_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def mapillary_config(kit: ConceptKit) -> dict:
    """``config_v1.2.json``: the 66 labels in id order, as the real file lists them."""
    labels = []
    for label in sorted(kit.labelsets["mapillary"].labels, key=lambda item: item.id):
        labels.append({"name": label.name, "readable": label.extra.get("readable", label.name),
                       "color": list(label.extra.get("color", [0, 0, 0])),
                       "instances": bool(label.extra.get("instances", False)),
                       "evaluate": bool(label.extra.get("evaluate", True))})
    return {"labels": labels}


def write_mapillary(kit: ConceptKit, root: Path, seed, counts, size):
    """Mapillary Vistas v1.2: JPEG images and PNG labels named by a random 22-character key
    (from a seed of its own, so the keys do not depend on the drawing), and the config."""
    summary = {}
    config = json.dumps(mapillary_config(kit), indent=2) + "\n"
    write_file(root / "config_v1.2.json", config.encode("utf-8"))
    for s, (split, folder) in enumerate((("train", "training"), ("val", "validation"))):
        for i in range(counts[split]):
            image, cv = draw_scene(kit, "mapillary", s, i, seed, size)
            key_rng = np.random.default_rng(np.random.SeedSequence([seed % 2**63, 3, s, i, 7]))
            key = "".join(KEY_ALPHABET[k] for k in key_rng.integers(0, len(KEY_ALPHABET), 22))
            write_file(root / folder / "images" / f"{key}.jpg", jpg_bytes(image))
            write_file(root / folder / "v1.2" / "labels" / f"{key}.png",
                       png_bytes(kit.lut["mapillary"][cv.cmap], "L"))
        summary[split] = counts[split]
    return summary
