"""The writers of the sample data, one a layout: each writes one dataset's train and val
splits under its folder and returns ``{split: count}``."""

from dsspn_cli.data.sample.layouts.ade20k import write_ade
from dsspn_cli.data.sample.layouts.camvid import write_camvid
from dsspn_cli.data.sample.layouts.cityscapes import write_cityscapes
from dsspn_cli.data.sample.layouts.coco_stuff import write_coco
from dsspn_cli.data.sample.layouts.mapillary import write_mapillary
from dsspn_cli.data.sample.layouts.voc import write_voc

# The writer of each dataset, by the tree's dataset name (held-out sets: their label set's).
WRITERS = {"cityscapes": write_cityscapes, "ade": write_ade, "coco": write_coco,
           "mapillary": write_mapillary, "camvid": write_camvid, "voc": write_voc}
