"""The sample data in Cityscapes' layout: ``leftImg8bit/{train,val}/<city>/`` and
``gtFine/{train,val}/<city>/`` (``_labelIds.png``, ``_labelTrainIds.png``)."""

from __future__ import annotations

from pathlib import Path

from dsspn_cli.data.sample.concepts import ConceptKit
from dsspn_cli.data.sample.layouts.encode import png_bytes, write_file
from dsspn_cli.data.sample.scenes import draw_scene

CITIES = {"train": ("aachen", "bochum"), "val": ("frankfurt", "munster")}


def write_cityscapes(kit: ConceptKit, root: Path, seed, counts, size):
    """Cityscapes (fine): 8-bit PNG images, labels as ids and as train ids, two cities a
    split; frame 19 of each sequence, the frame the real dataset annotates."""
    summary = {}
    for s, split in enumerate(("train", "val")):
        cities = CITIES[split]
        for i in range(counts[split]):
            image, cv = draw_scene(kit, "cityscapes", s, i, seed, size)
            city = cities[i % len(cities)]
            stem = f"{city}_{i // len(cities):06d}_000019"
            ids = kit.lut["cityscapes"][cv.cmap]
            write_file(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
                       png_bytes(image, "RGB"))
            gt = root / "gtFine" / split / city
            write_file(gt / f"{stem}_gtFine_labelIds.png", png_bytes(ids, "L"))
            write_file(gt / f"{stem}_gtFine_labelTrainIds.png",
                       png_bytes(kit.train_ids[ids], "L"))
        summary[split] = counts[split]
    return summary
