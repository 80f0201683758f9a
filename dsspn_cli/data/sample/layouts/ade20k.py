"""The sample data in ADE20K's layout: ``ADEChallengeData2016/{images,annotations}/
{training,validation}/ADE_{train,val}_<n>.jpg|png``."""

from __future__ import annotations

from pathlib import Path

from dsspn_cli.data.sample.concepts import ConceptKit
from dsspn_cli.data.sample.layouts.encode import jpg_bytes, png_bytes, write_file
from dsspn_cli.data.sample.scenes import draw_scene


def write_ade(kit: ConceptKit, root: Path, seed, counts, size):
    """ADE20K SceneParsing: JPEG images, PNG annotations numbered from 1 a split."""
    summary = {}
    base = root / "ADEChallengeData2016"
    for s, (split, folder, tag) in enumerate((("train", "training", "train"),
                                              ("val", "validation", "val"))):
        for i in range(counts[split]):
            image, cv = draw_scene(kit, "ade", s, i, seed, size)
            stem = f"ADE_{tag}_{i + 1:08d}"
            write_file(base / "images" / folder / f"{stem}.jpg", jpg_bytes(image))
            write_file(base / "annotations" / folder / f"{stem}.png",
                       png_bytes(kit.lut["ade"][cv.cmap], "L"))
        summary[split] = counts[split]
    return summary
