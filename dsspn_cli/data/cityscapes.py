"""Cityscapes (fine annotations): leftImg8bit/<split>/<city>/*_leftImg8bit.png with
gtFine/<split>/<city>/*_gtFine_labelIds.png (or *_gtFine_labelTrainIds.png)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np

from dsspn_cli.data.common import (
    BadFile,
    DatasetFormat,
    Sample,
    files,
    pair_by_stem,
    read_label_png,
)

IMAGE_TAIL = "_leftImg8bit.png"
LABEL_TAIL = "_gtFine_labelIds.png"
TRAIN_ID_TAIL = "_gtFine_labelTrainIds.png"


class Cityscapes(DatasetFormat):
    name = "cityscapes"
    labelset = "cityscapes"
    splits = {"train": "train", "val": "val", "test": "test"}
    layout = ("leftImg8bit/{train,val}/<city>/*_leftImg8bit.png + "
              "gtFine/{train,val}/<city>/*_gtFine_labelIds.png")

    def samples(self, root: Path, split: str) -> list[Sample]:
        folder = self.folder(split)
        image_dir = root / "leftImg8bit" / folder
        label_dir = root / "gtFine" / folder
        if not image_dir.is_dir():
            raise self.missing_layout(root, image_dir)
        labels = files(label_dir, (".png",), recursive=True) if label_dir.is_dir() else []
        tail = LABEL_TAIL if any(p.name.endswith(LABEL_TAIL) for p in labels) else TRAIN_ID_TAIL
        return pair_by_stem(image_dir, label_dir, IMAGE_TAIL, tail, recursive=True,
                            extra={"train_ids": tail == TRAIN_ID_TAIL})

    @cached_property
    def _train_to_label(self) -> np.ndarray:
        """trainId -> labelId, so trainIds files read like labelIds files (255 -> unlabeled)."""
        from dsspn_cli.hierarchy.labelset import load_labelset

        table = np.zeros(256, dtype=np.int32)     # label id 0 = 'unlabeled'
        for label in load_labelset(self.labelset).labels:
            train_id = label.extra.get("train_id")
            if label.mapped and isinstance(train_id, int) and 0 <= train_id < 255:
                table[train_id] = label.id
        return table

    def read_label(self, sample: Sample) -> np.ndarray:
        values = read_label_png(sample.label)
        if sample.extra.get("train_ids"):
            if values.max(initial=0) > 255:
                raise BadFile(sample.label, "train ids above 255")
            bad = sorted(set(np.unique(values).tolist()) - set(range(19)) - {255})
            if bad:
                raise BadFile(sample.label, f"train ids {bad[:5]} are not Cityscapes train ids "
                              "(0-18, 255 = ignore)")
            return self._train_to_label[values]
        return values
