"""A user's own data: ROOT/images/<split>/*.{jpg,png} with ROOT/labels/<split>/*.png and a
label set file ROOT/labels.yaml (or labels.txt). Without split folders, images/ and labels/
hold one split, read as 'train'."""

from __future__ import annotations

from pathlib import Path

from dsspn_cli.data.common import DatasetFormat, Sample, pair_by_stem
from dsspn_cli.errors import UserError


class Folder(DatasetFormat):
    name = "folder"
    labelset = ""
    splits = {"train": "train", "val": "val", "test": "test"}
    layout = "images/<split>/*.jpg + labels/<split>/*.png + labels.yaml (or labels.txt)"

    @staticmethod
    def labelset_path(root: Path) -> Path:
        for name in ("labels.yaml", "labels.yml", "labels.txt"):
            if (root / name).is_file():
                return root / name
        raise UserError(f"{root}: no label set (labels.yaml or labels.txt) beside images/ and "
                        "labels/; write one (see README, 'Label sets')")

    def samples(self, root: Path, split: str) -> list[Sample]:
        folder = self.folder(split)
        image_dir, label_dir = root / "images" / folder, root / "labels" / folder
        if not image_dir.is_dir() and split == "train" and (root / "images").is_dir():
            image_dir, label_dir = root / "images", root / "labels"
        if not image_dir.is_dir():
            raise self.missing_layout(root, image_dir)
        return pair_by_stem(image_dir, label_dir, orphan_suffix=".png")
