"""KITTI semantic segmentation (data_semantics): training/image_2/<n>_10.png with
training/semantic/<n>_10.png, which hold Cityscapes label ids. Only the 200 training images
have labels (testing/ has none), so they are the one split, read as 'train'; as a held-out
test set all 200 are scored."""

from __future__ import annotations

from pathlib import Path

from dsspn_cli.data.common import DatasetFormat, Sample, pair_by_stem


class KITTI(DatasetFormat):
    name = "kitti"
    labelset = "kitti"
    splits = {"train": "training"}
    layout = "training/image_2/*.png + training/semantic/*.png"
    held_out = True
    test_split = "train"

    def samples(self, root: Path, split: str) -> list[Sample]:
        folder = root / self.folder(split)
        image_dir, label_dir = folder / "image_2", folder / "semantic"
        if not image_dir.is_dir():
            raise self.missing_layout(root, image_dir)
        return pair_by_stem(image_dir, label_dir, orphan_suffix=".png")
