"""WildDash v1: wd_val_01/<image>.png with its label map beside it,
wd_val_01/<image>_labelIds.png (Cityscapes label ids). The 70 validation images are the
ones with public labels (the benchmark set, wd_both_01, has none)."""

from __future__ import annotations

from pathlib import Path

from dsspn_cli.data.common import DatasetFormat, Sample, pair_by_stem

LABEL_TAIL = "_labelIds.png"
# Annotations that share the image folder and are not photos.
ANNOTATION_TAILS = (LABEL_TAIL, "_instanceIds.png")


class WildDash(DatasetFormat):
    name = "wilddash"
    labelset = "wilddash"
    splits = {"val": "wd_val_01"}
    layout = "wd_val_01/<image>.png + wd_val_01/<image>_labelIds.png"
    held_out = True
    test_split = "val"

    def samples(self, root: Path, split: str) -> list[Sample]:
        folder = root / self.folder(split)
        if not folder.is_dir() and root.name == self.folder(split):
            folder = root                       # ROOT is wd_val_01 itself
        if not folder.is_dir():
            raise self.missing_layout(root, folder)
        return pair_by_stem(folder, folder, label_tail=LABEL_TAIL, orphan_suffix=".png",
                            not_images=ANNOTATION_TAILS)
