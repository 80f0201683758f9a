"""Pascal VOC 2012 segmentation: VOCdevkit/VOC2012/JPEGImages/<id>.jpg with
SegmentationClass/<id>.png, split by ImageSets/Segmentation/{train,val,trainval}.txt.

The label maps are palette PNGs: a pixel's palette index is its class id (0 background,
1-20, 255 the void border drawn around objects), and its colour only shows it. They are read
as indices (Pillow's mode P), never through their colours.
"""

from __future__ import annotations

from dsspn_cli.data.common import SplitListFormat


class PascalVOC(SplitListFormat):
    name = "voc"
    labelset = "voc"
    splits = {"train": "train", "val": "val", "trainval": "trainval"}
    layout = ("VOCdevkit/VOC2012/JPEGImages/<id>.jpg + SegmentationClass/<id>.png + "
              "ImageSets/Segmentation/{train,val,trainval}.txt")
    held_out = True
    test_split = "val"                # VOC's test labels are not public; MSeg scores val
    tops = ("VOCdevkit/VOC2012", "VOC2012")
    lists = "ImageSets/Segmentation"
    labels = "SegmentationClass"
