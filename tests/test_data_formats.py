"""Format readers on tiny datasets written here in the official layouts."""
import json

import numpy as np
import pytest
from PIL import Image

from dsspn_cli.data.audit import check_dataset
from dsspn_cli.data.common import BadFile
from dsspn_cli.data.formats import FORMATS, canonical, get_format
from dsspn_cli.errors import UserError


def save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode=mode).save(path)
    return path


def rgb(h=8, w=12, value=100):
    return np.full((h, w, 3), value, dtype=np.uint8)


def label(h=8, w=12, value=7):
    return np.full((h, w), value, dtype=np.uint8)


def make_cityscapes(root, train_ids=False):
    for split, city in (("train", "aachen"), ("val", "frankfurt")):
        for i in range(2):
            stem = f"{city}_000000_{i:06d}"
            save(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", rgb())
            lab = label(value=0 if train_ids else 26)
            lab[:4] = 0 if train_ids else 7          # road
            if train_ids:
                lab[4:] = 13                          # car's train id
            tail = "_gtFine_labelTrainIds.png" if train_ids else "_gtFine_labelIds.png"
            save(root / "gtFine" / split / city / f"{stem}{tail}", lab)
    return root


def test_cityscapes_label_ids_and_train_ids_read_alike(tmp_path):
    fmt = get_format("cityscapes")
    for train_ids, root in ((False, tmp_path / "a"), (True, tmp_path / "b")):
        make_cityscapes(root, train_ids)
        samples = fmt.samples(root, "train")
        assert [s.key for s in samples] == ["aachen_000000_000000", "aachen_000000_000001"]
        values = fmt.read_label(samples[0])
        assert values[0, 0] == 7 and values[-1, -1] == 26      # label ids either way


def test_ade_layout(tmp_path):
    base = tmp_path / "ADEChallengeData2016"
    save(base / "images" / "training" / "ADE_train_00000001.jpg", rgb())
    save(base / "annotations" / "training" / "ADE_train_00000001.png", label(value=5))
    fmt = get_format("ade20k")
    (sample,) = fmt.samples(tmp_path, "train")
    assert sample.key == "ADE_train_00000001" and fmt.read_label(sample)[0, 0] == 5
    with pytest.raises(UserError, match="not a ade layout .*validation"):
        fmt.samples(tmp_path, "val")


def test_mapillary_layout_and_config(tmp_path):
    from dsspn_cli.hierarchy.labelset import load_labelset

    save(tmp_path / "training" / "images" / "abc.jpg", rgb())
    save(tmp_path / "training" / "v1.2" / "labels" / "abc.png", label(value=13))
    names = [{"name": l.name} for l in load_labelset("mapillary").labels]
    (tmp_path / "config_v1.2.json").write_text(json.dumps({"labels": names}))
    fmt = get_format("vistas")
    (sample,) = fmt.samples(tmp_path, "train")
    assert fmt.read_label(sample)[0, 0] == 13
    (tmp_path / "config_v1.2.json").write_text(json.dumps({"labels": names[::-1]}))
    with pytest.raises(UserError, match="labels differ from Mapillary Vistas v1.2 at id 0"):
        fmt.samples(tmp_path, "train")


def test_coco_json_rle_and_polygons_through_pycocotools(tmp_path):
    from pycocotools import mask as mask_utils

    h, w = 20, 30
    save(tmp_path / "images" / "val2017" / "000000000001.jpg", rgb(h, w))
    stuff = np.zeros((h, w), dtype=np.uint8, order="F")
    stuff[10:] = 1                                               # the lower half: road
    rle = mask_utils.encode(np.asfortranarray(stuff))
    rle["counts"] = rle["counts"].decode()
    image = {"id": 1, "file_name": "000000000001.jpg", "height": h, "width": w}
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "stuff_val2017.json").write_text(json.dumps({
        "images": [image], "categories": [{"id": 149, "name": "road"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 149, "segmentation": rle,
                         "area": int(stuff.sum()), "bbox": [0, 10, 30, 10], "iscrowd": 0}]}))
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps({
        "images": [image], "categories": [{"id": 3, "name": "car"}],
        "annotations": [{"id": 2, "image_id": 1, "category_id": 3,
                         "segmentation": [[2, 2, 12, 2, 12, 14, 2, 14]], "area": 120.0,
                         "bbox": [2, 2, 10, 12], "iscrowd": 0}]}))
    fmt = get_format("coco")
    (sample,) = fmt.samples(tmp_path, "val")
    values = fmt.read_label(sample)
    assert values.shape == (h, w)
    assert values[0, 20] == 255            # unannotated
    assert values[15, 20] == 148           # road: category 149 -> label id 148
    assert values[5, 5] == 2               # car polygon painted over: category 3 -> id 2
    assert values[12, 5] == 2              # things over stuff


def test_folder_layout_with_own_labelset(tmp_path):
    (tmp_path / "labels.txt").write_text("car\nroad\n")
    save(tmp_path / "images" / "train" / "x.png", rgb())
    save(tmp_path / "labels" / "train" / "x.png", label(value=1))
    fmt = get_format("folder")
    (sample,) = fmt.samples(tmp_path, "train")
    assert fmt.read_label(sample)[0, 0] == 1


def test_colour_label_maps_are_refused(tmp_path):
    path = save(tmp_path / "l.png", rgb())
    from dsspn_cli.data.common import read_label_png
    with pytest.raises(BadFile, match="single-channel"):
        read_label_png(path)


def test_unknown_format():
    with pytest.raises(UserError, match="--format nuscenes: unknown dataset format"):
        get_format("nuscenes")


def test_canonical_resolves_case_and_aliases_and_refuses_unknown():
    assert canonical("Cityscapes") == "cityscapes" and canonical("ADE20K") == "ade"
    assert canonical("pc60") == "pascal-context-60" and canonical("coco-json") == "coco-json"
    assert all(canonical(name) == name for name in FORMATS)
    assert canonical("nuscenes") is None and canonical("") is None


def test_check_reports_every_problem_at_once(tmp_path):
    root = make_cityscapes(tmp_path / "c")
    train = root / "leftImg8bit" / "train" / "aachen"
    labels = root / "gtFine" / "train" / "aachen"
    # a truncated image, a size mismatch, a value outside the label set, a missing pair
    data = (train / "aachen_000000_000000_leftImg8bit.png").read_bytes()
    (train / "aachen_000000_000000_leftImg8bit.png").write_bytes(data[: len(data) // 2])
    save(labels / "aachen_000000_000001_gtFine_labelIds.png", label(h=4, value=200))
    save(train / "aachen_000000_000002_leftImg8bit.png", rgb())
    save(labels / "aachen_000000_000009_gtFine_labelIds.png", label())
    report = check_dataset(root, "cityscapes")
    problems = {(p.file.rsplit("/", 1)[-1], p.problem.split(" (")[0]) for p in report.problems}
    assert report.counts == {"train": 3, "val": 2}
    assert ("aachen_000000_000000_leftImg8bit.png", "unreadable image") in problems
    assert any("size 12x4 differs" in p for _, p in problems)
    assert any("label values 200 are not in the label set" in p for _, p in problems)
    assert ("aachen_000000_000002_leftImg8bit.png", "image without a label map") in problems
    assert any("label map without an image" in p for _, p in problems)
    assert not report.ok


def test_wrong_layout_is_a_clear_error(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(UserError, match="not a cityscapes layout"):
        check_dataset(tmp_path / "x", "cityscapes")
    with pytest.raises(UserError, match="no such folder"):
        check_dataset(tmp_path / "nope", "cityscapes")


def test_check_reports_a_split_that_exists_but_cannot_be_read(tmp_path):
    save(tmp_path / "images" / "train2017" / "000000000001.jpg", rgb())
    save(tmp_path / "images" / "val2017" / "000000000002.jpg", rgb())
    save(tmp_path / "stuffthingmaps_trainval2017" / "val2017" / "000000000002.png", label())
    report = check_dataset(tmp_path, "coco")
    assert not report.ok
    assert any("no label maps" in p.problem and "(train)" in p.file for p in report.problems)


def test_coco_json_annotation_errors_name_the_json_and_image(tmp_path):
    save(tmp_path / "images" / "val2017" / "000000000001.jpg", rgb(4, 4))
    image = {"id": 1, "file_name": "000000000001.jpg", "height": 4, "width": 4}
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps({
        "images": [image], "categories": [{"id": 3, "name": "car"}],
        "annotations": [{"id": 7, "image_id": 1, "category_id": 3, "iscrowd": 0, "area": 9,
                         "bbox": [0, 0, 3, 3],
                         "segmentation": {"counts": [0, 9], "size": [3, 3]}}]}))
    fmt = get_format("coco")
    (sample,) = fmt.samples(tmp_path, "val")
    with pytest.raises(BadFile, match="instances_val2017.json: annotation 7 of "
                                      "000000000001.jpg: segmentation is 3x3, the image 4x4"):
        fmt.read_label(sample)
    (tmp_path / "annotations" / "instances_val2017.json").write_text("[]")
    from dsspn_cli.data import coco_stuff
    coco_stuff._index.cache_clear()
    with pytest.raises(UserError, match="malformed COCO annotation file"):
        fmt.samples(tmp_path, "val")
