"""ADE20K SceneParsing: ADEChallengeData2016/images/{training,validation}/*.jpg with
ADEChallengeData2016/annotations/{training,validation}/*.png (values 1-150, 0 = other)."""

from __future__ import annotations

from pathlib import Path

from dsspn_cli.data.common import DatasetFormat, Sample, pair_by_stem

ROOT_NAME = "ADEChallengeData2016"


class ADE20K(DatasetFormat):
    name = "ade"
    labelset = "ade"
    splits = {"train": "training", "val": "validation"}
    layout = ("ADEChallengeData2016/images/{training,validation}/*.jpg + "
              "ADEChallengeData2016/annotations/{training,validation}/*.png")

    def samples(self, root: Path, split: str) -> list[Sample]:
        folder = self.folder(split)
        base = root / ROOT_NAME if (root / ROOT_NAME).is_dir() else root
        image_dir, label_dir = base / "images" / folder, base / "annotations" / folder
        if not image_dir.is_dir():
            raise self.missing_layout(root, root / ROOT_NAME / "images" / folder)
        return pair_by_stem(image_dir, label_dir)
