"""ScanNet 2D, the 20 benchmark classes (scannet_frames_25k):
scannet_frames_25k/scene<nnnn>_<nn>/color/<frame>.jpg with label/<frame>.png, split by
ScanNet's scene lists scannetv2_{train,val,test}.txt (from its repository, Tasks/Benchmark)
beside the scene folders.

The label maps hold NYUv2-40 ids (0 = unannotated); the benchmark scores 20 of them, so the
reader maps those to the label set's ids 0-19 and every other NYU40 id to 255 (not scored).
"""

from __future__ import annotations

import dataclasses
from functools import cached_property
from pathlib import Path

import numpy as np

from dsspn_cli.data.common import (
    DatasetFormat,
    MissingSplit,
    Sample,
    dataset_base,
    pair_by_stem,
    read_label_within,
    read_split_list,
)

TOP = "scannet_frames_25k"
NYU40 = 40                        # the largest NYUv2-40 id
IGNORE = 255


class ScanNet(DatasetFormat):
    name = "scannet"
    labelset = "scannet"
    splits = {"train": "scannetv2_train.txt", "val": "scannetv2_val.txt",
              "test": "scannetv2_test.txt"}
    layout = ("scannet_frames_25k/scene*/color/*.jpg + scene*/label/*.png + "
              "scannetv2_{train,val,test}.txt")
    held_out = True
    test_split = "val"

    def samples(self, root: Path, split: str) -> list[Sample]:
        listed = self.folder(split)
        base = dataset_base(root, (TOP,), "")
        listing = next((p for p in (base / listed, root / listed) if p.is_file()), None)
        if listing is None:
            if not any(base.glob("scene*/color")):
                raise self.missing_layout(root, base / "scene*" / "color")
            raise MissingSplit(f"{root}: no {listed}: ScanNet's splits are lists of scenes; "
                               f"put scannetv2_{{train,val,test}}.txt from the ScanNet "
                               f"repository (Tasks/Benchmark) beside the scene folders")
        found = []
        for scene in dict.fromkeys(read_split_list(listing)):
            folder = base / scene
            if not folder.is_dir():       # listed, not there: reported as a missing file
                found.append(Sample(folder / "color", None, scene))
                continue
            # Frame numbers repeat across scenes: the scene makes the key unique.
            for sample in pair_by_stem(folder / "color", folder / "label"):
                found.append(dataclasses.replace(sample, key=f"{scene}_{sample.key}"))
        return found

    @cached_property
    def _nyu40_to_class(self) -> np.ndarray:
        from dsspn_cli.hierarchy.labelset import load_labelset

        table = np.full(NYU40 + 1, IGNORE, dtype=np.int32)
        for label in load_labelset(self.labelset).mapped_labels:
            table[label.extra["nyu40_id"]] = label.id
        return table

    def read_label(self, sample: Sample) -> np.ndarray:
        values = read_label_within(
            sample.label, NYU40, f"NYUv2-40 ids (0-{NYU40}; ScanNet's raw ids?)",
            "use the label maps of scannet_frames_25k, or map them to NYU40 with "
            "scannetv2-labels.combined.tsv")
        return self._nyu40_to_class[values]
