"""COCO-Stuff 164k: images/{train2017,val2017}/*.jpg with label maps
stuffthingmaps_trainval2017/{train2017,val2017}/*.png (ids 0-181, 255 unlabelled), or the COCO
JSON annotation files annotations/{stuff,instances}_{train2017,val2017}.json read through
pycocotools (RLE and polygon segmentations; category id = label id + 1)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from dsspn_cli.data.common import (
    BadFile,
    DatasetFormat,
    Sample,
    files,
    image_header,
    pair_by_stem,
)
from dsspn_cli.errors import UserError

MAPS = "stuffthingmaps_trainval2017"
UNLABELLED = 255
OTHER_CATEGORY = 183       # the stuff json's 'other' (all things merged): not a label id


class CocoStuff(DatasetFormat):
    """Reads the PNG label maps when present, else the JSON annotations."""

    name = "coco"
    labelset = "coco"
    splits = {"train": "train2017", "val": "val2017"}
    layout = ("images/{train2017,val2017}/*.jpg + stuffthingmaps_trainval2017/{train2017,"
              "val2017}/*.png, or annotations/{stuff,instances}_{train2017,val2017}.json")
    prefer_json = False

    def samples(self, root: Path, split: str) -> list[Sample]:
        folder = self.folder(split)
        image_dir = root / "images" / folder
        if not image_dir.is_dir():
            raise self.missing_layout(root, image_dir)
        map_dir = root / MAPS / folder
        if map_dir.is_dir() and not self.prefer_json:
            return pair_by_stem(image_dir, map_dir)
        annotation_files = annotation_paths(root, folder)
        if not annotation_files:
            raise UserError(f"{root}: no label maps ({map_dir}) and no COCO JSON "
                            f"(annotations/stuff_{folder}.json or instances_{folder}.json); "
                            f"expected {self.layout}")
        by_name = {}
        for path in annotation_files:
            for entry in _index(str(path))["images"].values():
                if not isinstance(entry, dict) or "file_name" not in entry:
                    raise UserError(f"{path}: an image entry has no 'file_name'; use the "
                                    "official annotation file")
                by_name.setdefault(entry["file_name"], entry["id"])
        found = []
        for image in files(image_dir):
            image_id = by_name.get(image.name)
            found.append(Sample(image, annotation_files[0] if image_id is not None else None,
                                image.stem, {"image_id": image_id,
                                             "annotations": tuple(map(str, annotation_files))}))
        return found

    def read_label(self, sample: Sample) -> np.ndarray:
        if "image_id" not in sample.extra:
            return super().read_label(sample)
        return rasterise(sample.extra["annotations"], sample.extra["image_id"], sample.image)


class CocoStuffJson(CocoStuff):
    name = "coco-json"
    prefer_json = True


def annotation_paths(root: Path, folder: str) -> list[Path]:
    """Stuff first, then things: things are painted over stuff, as the PNG maps have them."""
    names = (f"stuff_{folder}.json", f"instances_{folder}.json")
    return [root / "annotations" / n for n in names if (root / "annotations" / n).is_file()]


@lru_cache(maxsize=8)
def _index(path: str) -> dict:
    """A COCO annotation file indexed by image (pycocotools' COCO, loaded once per file)."""
    import contextlib
    import io

    from pycocotools.coco import COCO

    try:
        with contextlib.redirect_stdout(io.StringIO()):     # COCO() prints progress lines
            coco = COCO(path)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError,
            AssertionError, AttributeError) as exc:
        raise UserError(f"{path}: malformed COCO annotation file ({exc.__class__.__name__}); "
                        "use the official stuff_*/instances_* JSON") from None
    return {"coco": coco, "images": coco.imgs}


def rasterise(annotation_files, image_id: int, image_path: Path) -> np.ndarray:
    """Paint every annotation of an image (category id - 1 = label id) into a label map."""
    height, width, orientation = image_header(image_path)
    label = np.full((height, width), UNLABELLED, dtype=np.int32)
    for path in annotation_files:
        coco = _index(str(path))["coco"]
        if image_id not in coco.imgs:
            continue
        info = coco.imgs[image_id]
        if (info.get("height"), info.get("width")) != (height, width):
            turned = (f" (upright, by its EXIF orientation {orientation}; remove the tag if the "
                      "annotations are on the stored pixels)" if orientation in (5, 6, 7, 8)
                      else "")
            raise BadFile(image_path, f"is {width}x{height}{turned} but {path} says "
                          f"{info.get('width')}x{info.get('height')}")
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=None))
        # File order, as COCO-Stuff's own conversion to PNG paints them (later on top).
        for ann in anns:
            where = f"annotation {ann.get('id')} of {image_path.name}"
            try:
                category = int(ann["category_id"])
            except (KeyError, TypeError, ValueError):
                raise BadFile(Path(path), f"{where}: no integer 'category_id'") from None
            if category == OTHER_CATEGORY:
                continue
            if not 1 <= category <= 182:
                raise BadFile(Path(path), f"{where}: category_id {category} is not a "
                              "COCO-Stuff category (1-182, 183 other)")
            try:
                mask = coco.annToMask(ann).astype(bool)
            except (KeyError, TypeError, ValueError, IndexError, AssertionError) as exc:
                raise BadFile(Path(path), f"{where}: bad segmentation "
                              f"({exc.__class__.__name__})") from None
            if mask.shape != label.shape:
                raise BadFile(Path(path), f"{where}: segmentation is {mask.shape[1]}x"
                              f"{mask.shape[0]}, the image {width}x{height}")
            label[mask] = category - 1
    return label
