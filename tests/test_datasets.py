"""Datasets over the built-in sample data: concept targets, one dataset per batch, and the
same batches whatever the number of loader workers."""
import numpy as np
import pytest
import torch

from dsspn_cli.data.common import BadFile, read_label_png
from dsspn_cli.data.dataset import JointDataset, SegmentationDataset, collate
from dsspn_cli.data.sample import write_sample_data
from dsspn_cli.data.sampler import DatasetBatchSampler
from dsspn_cli.data.transforms import TrainTransform
from dsspn_cli.errors import UserError

FOLDERS = {"cityscapes": "cityscapes", "ade": "ade20k", "coco": "coco-stuff",
           "coco-json": "coco-stuff", "mapillary": "mapillary"}


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    write_sample_data(root, seed=1, images=8, size=(64, 128))
    return root


@pytest.mark.parametrize("fmt", sorted(FOLDERS))
def test_every_format_yields_concepts_of_the_tree(sample_root, table, fmt):
    dataset = SegmentationDataset(sample_root / FOLDERS[fmt], fmt, "train", table)
    item = dataset[0]
    assert item["image"].shape == (3, 64, 128) and item["image"].dtype == torch.float32
    target = item["target"]
    assert target.shape == (64, 128) and target.dtype == torch.int64
    concepts = set(target.unique().tolist()) - {-1}
    assert concepts and max(concepts) < len(table.concepts)
    name = "coco" if fmt == "coco-json" else fmt
    assert item["dataset"] == name
    # Every concept is one the dataset labels (targets stop at its own granularity).
    labelled = {c for c in table.dataset(name).label_to_concept if c >= 0}
    assert concepts <= labelled


def test_coco_png_and_json_give_the_same_targets(sample_root, table):
    png = SegmentationDataset(sample_root / "coco-stuff", "coco", "val", table)
    json_ = SegmentationDataset(sample_root / "coco-stuff", "coco-json", "val", table)
    for i in range(len(png)):
        assert torch.equal(png[i]["target"], json_[i]["target"])


def test_granularity_differs_between_datasets(sample_root, table):
    """A bicyclist is 'rider' in Cityscapes but 'bicyclist' in Mapillary."""
    names = table.concepts
    city = SegmentationDataset(sample_root / "cityscapes", "cityscapes", "train", table)
    vistas = SegmentationDataset(sample_root / "mapillary", "mapillary", "train", table)
    seen_city = {names[c] for i in range(len(city)) for c in city[i]["target"].unique().tolist()
                 if c >= 0}
    seen_vistas = {names[c] for i in range(len(vistas))
                   for c in vistas[i]["target"].unique().tolist() if c >= 0}
    assert "bicyclist" not in seen_city and "bicyclist" in seen_vistas
    assert "rider" in seen_city


def loader_batches(joint, workers):
    sampler = DatasetBatchSampler(joint.sizes, 4, seed=3)
    loader = torch.utils.data.DataLoader(joint, batch_sampler=sampler, num_workers=workers,
                                         collate_fn=collate)
    return list(loader)


def test_same_batches_with_0_and_2_workers(sample_root, table):
    transform = TrainTransform(crop=(48, 48))
    joint = JointDataset([
        SegmentationDataset(sample_root / "cityscapes", "cityscapes", "train", table,
                            transform=transform),
        SegmentationDataset(sample_root / "ade20k", "ade", "train", table, transform=transform)])
    serial, parallel = loader_batches(joint, 0), loader_batches(joint, 2)
    assert len(serial) == len(parallel) == 4
    for a, b in zip(serial, parallel):
        assert a["dataset"] == b["dataset"]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["target"], b["target"])


def test_undefined_label_value_names_the_file(sample_root, table, tmp_path):
    import shutil

    from PIL import Image

    root = tmp_path / "city"
    shutil.copytree(sample_root / "cityscapes", root)
    label = sorted((root / "gtFine" / "train").rglob("*_labelIds.png"))[0]
    values = read_label_png(label).astype(np.uint8)
    values[0, 0] = 200
    Image.fromarray(values).save(label)
    dataset = SegmentationDataset(root, "cityscapes", "train", table)
    with pytest.raises(BadFile, match=f"{label.name}: label values 200 are not in the "
                                      "cityscapes label set"):
        dataset[0]


def test_missing_pair_stops_before_training(sample_root, table, tmp_path):
    import shutil

    root = tmp_path / "ade"
    shutil.copytree(sample_root / "ade20k", root)
    next((root / "ADEChallengeData2016" / "annotations" / "training").iterdir()).unlink()
    with pytest.raises(UserError, match="1 images or label maps of split 'train' have no "
                                        "partner"):
        SegmentationDataset(root, "ade", "train", table)


def test_dataset_not_in_tree(sample_root, table, tmp_path):
    (tmp_path / "labels.txt").write_text("car\n")
    (tmp_path / "images").mkdir()
    with pytest.raises(UserError, match="dataset 'labels' is not in this tree"):
        SegmentationDataset(tmp_path, "folder", "train", table)


def test_data_cli(sample_root, run, tmp_path):
    result = run("data", "check", sample_root / "cityscapes", "--format", "cityscapes", "--json")
    assert result.exit_code == 0
    import json
    report = json.loads(result.stdout)
    assert report["counts"] == {"train": 8, "val": 2} and report["problems"] == []
    result = run("data", "stats", sample_root / "ade20k", "--format", "ade20k", "--json")
    stats = json.loads(result.stdout)
    assert result.exit_code == 0 and stats["neurons_per_image"] > 1
    assert abs(sum(stats["pixel_share"].values()) - 1) < 1e-6
    result = run("data", "sample", tmp_path / "s", "--images", "2", "--size", "32x64")
    assert result.exit_code == 0 and (tmp_path / "s" / "cityscapes").is_dir()
    result = run("data", "sample", tmp_path / "s2", "--size", "big")
    assert result.exit_code == 2 and "HEIGHTxWIDTH" in result.stderr
    result = run("data", "check", tmp_path / "nowhere", "--format", "ade")
    assert result.exit_code == 2 and "no such folder" in result.stderr


def test_data_check_exit_1_with_problems(sample_root, run, tmp_path):
    import shutil

    root = tmp_path / "m"
    shutil.copytree(sample_root / "mapillary", root)
    image = next((root / "training" / "images").iterdir())
    image.write_bytes(b"not a jpeg")
    result = run("data", "check", root, "--format", "vistas")
    assert result.exit_code == 1 and "unreadable image" in result.stdout
