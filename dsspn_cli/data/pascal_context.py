"""Pascal Context in the layout mmsegmentation's converter writes
(tools/dataset_converters/pascal_context.py): VOCdevkit/VOC2010/JPEGImages/<id>.jpg with
SegmentationClassContext/<id>.png, split by ImageSets/SegmentationContext/{train,val}.txt.

A label map holds 0 for background and 1-59 for the 59 classes. Pascal Context 59 (the
benchmark mmsegmentation's PascalContextDataset59 reads) does not score background: its
reader turns 0 into 255 and v into v - 1, as mmsegmentation's reduce_zero_label does, so ids
are 0-58. Pascal Context 60 (``pascal-context-60``, MSeg's test set) keeps the values as they
are, background a class.
"""

from __future__ import annotations

import numpy as np

from dsspn_cli.data.common import Sample, SplitListFormat, read_label_within

CLASSES = 59


class PascalContext(SplitListFormat):
    name = "pascal-context"
    labelset = "pascal-context"
    splits = {"train": "train", "val": "val"}
    layout = ("VOCdevkit/VOC2010/JPEGImages/<id>.jpg + SegmentationClassContext/<id>.png + "
              "ImageSets/SegmentationContext/{train,val}.txt (mmsegmentation's converter)")
    held_out = True
    test_split = "val"
    tops = ("VOCdevkit/VOC2010", "VOC2010")
    lists = "ImageSets/SegmentationContext"
    labels = "SegmentationClassContext"
    reduce_zero_label = True

    def read_label(self, sample: Sample) -> np.ndarray:
        # Checked as stored: after v -> v - 1 a stray 60 would read as a class.
        values = read_label_within(
            sample.label, CLASSES, f"Pascal Context's (0 background, 1-{CLASSES})",
            "convert the annotations with mmsegmentation's "
            "tools/dataset_converters/pascal_context.py")
        if not self.reduce_zero_label:
            return values
        return np.where(values == 0, 255, values - 1).astype(np.int32)


class PascalContext60(PascalContext):
    name = "pascal-context-60"
    labelset = "pascal-context-60"
    reduce_zero_label = False
