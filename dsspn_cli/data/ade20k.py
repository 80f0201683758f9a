"""ADE20K SceneParsing: ADEChallengeData2016/images/{training,validation}/*.jpg with
ADEChallengeData2016/annotations/{training,validation}/*.png (values 1-150, 0 = other)."""

from __future__ import annotations

from pathlib import Path

from dsspn_cli.data.common import DatasetFormat, Sample, files

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
        labels = {p.stem: p for p in files(label_dir, (".png",))} if label_dir.is_dir() else {}
        found = []
        for image in files(image_dir):
            label = labels.pop(image.stem, None)
            found.append(Sample(image, label, image.stem))
        found += [Sample(image_dir / f"{stem}.jpg", label, stem, {"missing": "image"})
                  for stem, label in labels.items()]
        return found
