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
from dsspn_cli.errors import UserError, shown

MAPS = "stuffthingmaps_trainval2017"
UNLABELLED = 255
OTHER_CATEGORY = 183       # the stuff json's 'other' (all things merged): not a label id
# pycocotools rasterises a polygon by walking every edge at 5x resolution, in C, without
# checks: one coordinate at 1e12 asks for gigabytes (and NaN for undefined behaviour), and a
# malformed RLE string is read past its end. So the geometry is checked before it gets there.
# Points may lie outside the image (tools round and overshoot; pycocotools clips them), up
# to one image side beyond each edge.
MARGIN = 1.0
# The rasteriser's work is the length of the outlines; a real one is a few times the image's
# perimeter. One annotation's outlines may be this many times (width + height).
MAX_OUTLINE = 100


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
                if not isinstance(entry["file_name"], str):
                    raise UserError(f"{path}: image {shown(entry.get('id'))}: field "
                                    f"'file_name' is {shown(entry['file_name'])}, not a file "
                                    "name; write the image's name, like 000000000139.jpg")
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
            problem = segmentation_problem(ann.get("segmentation"), height, width)
            if problem is not None:
                raise BadFile(Path(path), f"{where}: {problem}")
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


# ------------------------------------------------------------------------------ geometry


def segmentation_problem(segmentation, height: int, width: int) -> str | None:
    """Why an annotation's segmentation must not reach pycocotools' rasteriser on a
    ``height`` x ``width`` image (not finite, far outside the image, too long, malformed),
    or None when it may."""
    if isinstance(segmentation, list):
        return _polygons_problem(segmentation, height, width)
    if isinstance(segmentation, dict):
        return _rle_problem(segmentation, height, width)
    return (f"segmentation is {shown(segmentation)}, neither polygons [[x, y, ...], ...] nor "
            "an RLE {size: [h, w], counts: ...}")


def _polygons_problem(polygons: list, height: int, width: int) -> str | None:
    if not polygons:
        return "segmentation is an empty list of polygons"
    outline = 0.0
    for k, polygon in enumerate(polygons):
        # pycocotools reads a first polygon of 4 numbers as a box, and drops an odd last one.
        if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2:
            return (f"polygon {k} is {shown(polygon)}, not a list of x, y pairs (3 points or "
                    "more)")
        if not all(type(value) in (int, float) for value in polygon):    # bool is not a number
            bad = next(v for v in polygon if type(v) not in (int, float))
            return f"polygon {k} holds {shown(bad)}, not a coordinate"
        try:
            points = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        except OverflowError:                   # an integer beyond float's range
            points = np.array([[np.inf, np.inf]])
        if not np.isfinite(points).all():
            return f"polygon {k} has a coordinate that is not a finite number"
        low = np.array([-MARGIN * width, -MARGIN * height])
        high = np.array([(1 + MARGIN) * width, (1 + MARGIN) * height])
        outside = ((points < low) | (points > high)).any(axis=1)
        if outside.any():
            x, y = points[np.flatnonzero(outside)[0]]
            return (f"polygon {k} has the point ({x:g}, {y:g}), far outside the {width}x"
                    f"{height} image")
        edges = np.diff(np.vstack([points, points[:1]]), axis=0)
        outline += float(np.abs(edges).max(axis=1).sum())
    if outline > MAX_OUTLINE * (width + height):
        return (f"its polygons' outlines are {outline:.0f} pixels long, more than "
                f"{MAX_OUTLINE} times the {width}x{height} image's width + height")
    return None


def _rle_problem(rle: dict, height: int, width: int) -> str | None:
    size, counts = rle.get("size"), rle.get("counts")
    if not (isinstance(size, list) and len(size) == 2
            and all(type(value) is int for value in size)):
        return f"RLE 'size' is {shown(size)}, not [height, width]"
    if size != [height, width]:
        # Said before decoding: pycocotools would allocate the size the RLE claims.
        return f"segmentation is {size[1]}x{size[0]}, the image {width}x{height}"
    if isinstance(counts, list):
        if not all(type(value) is int and value >= 0 for value in counts):
            return "RLE 'counts' holds a value that is not a run length (a whole number >= 0)"
        total = sum(counts)
    elif isinstance(counts, str):
        runs = _compressed_runs(counts)
        if runs is None:
            return "RLE 'counts' is not a COCO compressed RLE string"
        total = int(runs.sum())
    else:
        return f"RLE 'counts' is {shown(counts)}, neither run lengths nor a compressed string"
    if total != height * width:
        # Fewer would leave pixels of the mask unwritten (pycocotools does not clear it).
        return (f"RLE run lengths add up to {total} pixels, not the {width}x{height} image's "
                f"{height * width}")
    return None


def _compressed_runs(text: str) -> np.ndarray | None:
    """The run lengths of a COCO compressed RLE string (pycocotools' rleFrString, which reads
    past the end of a malformed string), or None when it is malformed. Each run is 1-7
    characters '0'-'o' of 5 bits, 0x20 meaning 'more follow', 0x10 in the last the sign;
    from the third run on, each is a difference to the run two before."""
    if not text.isascii():
        return None
    codes = np.frombuffer(text.encode("ascii"), dtype=np.uint8).astype(np.int64) - 48
    if codes.size == 0:
        return np.zeros(0, dtype=np.int64)
    if codes.min() < 0 or codes.max() > 63 or codes[-1] & 0x20:
        return None
    ends = np.flatnonzero((codes & 0x20) == 0)
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    if lengths.max() > 7:                      # 35 bits: more than any run of a mask
        return None
    position = np.arange(codes.size) - np.repeat(starts, lengths)
    values = np.add.reduceat((codes & 0x1F) << (5 * position), starts)
    negative = (codes[ends] & 0x10) != 0
    values[negative] -= np.int64(1) << (5 * lengths[negative])
    runs = values.copy()
    runs[1::2] = np.cumsum(values[1::2])      # run i (i > 2) = value i + run i - 2
    runs[2::2] = np.cumsum(values[2::2])
    if runs.min() < 0 or runs.max() >= 2**32:
        return None
    return runs
