"""The built-in sample data: layouts, label values, determinism, granularity, COCO JSON."""

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dsspn_cli.data import sample as S
from dsspn_cli.data.sample import write_sample_data
from dsspn_cli.errors import UserError
from dsspn_cli.hierarchy.labelset import load_labelset

SIZE = (64, 128)          # (height, width)
N = 4                     # train images per dataset; val gets max(2, N // 4) = 2
SPLITS = {"train": N, "val": 2}


@pytest.fixture(scope="module")
def kit(tree):
    return S.ConceptKit(tree)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample") / "data"
    summary = write_sample_data(out, seed=0, images=N, size=SIZE)
    return out, summary


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def label(path: Path) -> np.ndarray:
    img = Image.open(path)
    assert img.mode == "L", path
    arr = np.asarray(img)
    assert arr.dtype == np.uint8
    return arr


def valid_ids(name: str, ignore: int) -> set[int]:
    return {lab.id for lab in load_labelset(name).labels if lab.mapped} | {ignore}


# ------------------------------------------------------------------------------ layouts


def test_summary_and_readme(sample):
    out, summary = sample
    assert summary == {**{ds: SPLITS for ds in ("cityscapes", "ade", "coco", "mapillary")},
                       "camvid": {"test": 2}, "voc": {"val": 2}}
    assert sorted(p.name for p in out.iterdir()) == [
        "README.txt", "ade20k", "cityscapes", "coco-stuff", "held-out", "mapillary"]
    assert "not real photos" in (out / "README.txt").read_text().lower()


def test_cityscapes_layout(sample):
    out, _ = sample
    root = out / "cityscapes"
    ok = valid_ids("cityscapes", 0)
    city = load_labelset("cityscapes")
    train_of = {lab.id: (lab.extra["train_id"] if lab.mapped else 255) for lab in city.labels}
    for split, cities in (("train", {"aachen", "bochum"}), ("val", {"frankfurt", "munster"})):
        images = sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))
        assert len(images) == SPLITS[split]
        assert {p.parent.name for p in images} == cities
        for path in images:
            assert re.fullmatch(r"[a-z]+_\d{6}_\d{6}_leftImg8bit\.png", path.name)
            img = Image.open(path)
            assert img.mode == "RGB" and img.size == SIZE[::-1]
            stem = path.name[: -len("_leftImg8bit.png")]
            gt = root / "gtFine" / split / path.parent.name
            ids = label(gt / f"{stem}_gtFine_labelIds.png")
            train = label(gt / f"{stem}_gtFine_labelTrainIds.png")
            assert ids.shape == train.shape == SIZE
            assert set(np.unique(ids).tolist()) <= ok
            expected = np.vectorize(lambda v: train_of[int(v)])(ids)
            assert np.array_equal(train, expected)


def test_ade_layout(sample):
    out, _ = sample
    base = out / "ade20k" / "ADEChallengeData2016"
    ok = valid_ids("ade", 0)
    for folder, tag, n in (("training", "train", N), ("validation", "val", 2)):
        images = sorted((base / "images" / folder).glob("*.jpg"))
        assert [p.name for p in images] == [f"ADE_{tag}_{i:08d}.jpg" for i in range(1, n + 1)]
        for path in images:
            img = Image.open(path)
            assert img.mode == "RGB" and img.size == SIZE[::-1]
            arr = label(base / "annotations" / folder / f"{path.stem}.png")
            assert arr.shape == SIZE
            assert set(np.unique(arr).tolist()) <= ok


def test_coco_layout(sample):
    out, _ = sample
    root = out / "coco-stuff"
    ok = valid_ids("coco", 255)
    seen = set()
    for folder, n in (("train2017", N), ("val2017", 2)):
        images = sorted((root / "images" / folder).glob("*.jpg"))
        assert len(images) == n
        doc = json.loads((root / "annotations" / f"instances_{folder}.json").read_text())
        assert sorted(im["file_name"] for im in doc["images"]) == [p.name for p in images]
        for path in images:
            assert re.fullmatch(r"\d{12}\.jpg", path.name)
            seen.add(path.stem)
            img = Image.open(path)
            assert img.mode == "RGB" and img.size == SIZE[::-1]
            arr = label(root / "stuffthingmaps_trainval2017" / folder / f"{path.stem}.png")
            assert arr.shape == SIZE
            assert set(np.unique(arr).tolist()) <= ok
    assert len(seen) == N + 2               # image ids unique across splits


def test_mapillary_layout_and_config(sample):
    out, _ = sample
    root = out / "mapillary"
    ok = valid_ids("mapillary", 65)
    for folder, n in (("training", N), ("validation", 2)):
        images = sorted((root / folder / "images").glob("*.jpg"))
        assert len(images) == n
        for path in images:
            assert re.fullmatch(r"[A-Za-z0-9_-]{22}", path.stem)
            img = Image.open(path)
            assert img.mode == "RGB" and img.size == SIZE[::-1]
            arr = label(root / folder / "v1.2" / "labels" / f"{path.stem}.png")
            assert arr.shape == SIZE
            assert set(np.unique(arr).tolist()) <= ok
    config = json.loads((root / "config_v1.2.json").read_text())
    labels = config["labels"]
    assert len(labels) == 66
    official = sorted(load_labelset("mapillary").labels, key=lambda lab: lab.id)
    assert [entry["name"] for entry in labels] == [lab.name for lab in official]
    assert labels[0] == {"name": "animal--bird", "readable": "Bird", "color": [165, 42, 42],
                         "instances": True, "evaluate": True}
    assert labels[13]["name"] == "construction--flat--road"
    assert labels[65]["name"] == "void--unlabeled" and labels[65]["evaluate"] is False
    for entry in labels:
        assert set(entry) == {"name", "readable", "color", "instances", "evaluate"}
        assert len(entry["color"]) == 3


# -------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_other_seed_other_images(sample, tmp_path):
    out, _ = sample
    write_sample_data(tmp_path / "again", seed=0, images=N, size=SIZE)
    first, again = files(out), files(tmp_path / "again")
    assert first.keys() == again.keys()
    assert all(first[k] == again[k] for k in first)
    write_sample_data(tmp_path / "other", seed=1, images=N, size=SIZE)
    other = files(tmp_path / "other")
    a = sorted((out / "ade20k" / "ADEChallengeData2016" / "images" / "training").glob("*.jpg"))
    b = sorted((tmp_path / "other" / "ade20k" / "ADEChallengeData2016" / "images" /
                "training").glob("*.jpg"))
    assert [p.name for p in a] == [p.name for p in b]
    assert all(p.read_bytes() != q.read_bytes() for p, q in zip(a, b))
    assert set(first) != set(other)         # new COCO ids and Mapillary keys


# Digests of what write_sample_data(seed=0, images=N, size=SIZE) writes, recorded from the
# writer as it was before it became a package (data/sample.py, 1,147 lines): one sha256 over
# the sorted (path, content digest) list. LABELS covers what does not depend on an image
# encoder (the decoded pixels of every PNG, the JSON and README bytes); FILES covers every
# byte of every file. Re-record only for a change meant to alter the sample data, or when a
# new numpy (random streams) or Pillow (PNG/JPEG encoders) alters them, and say which.
# The held-out sets (held-out/, added later) have digests of their own, so these still pin
# the four training datasets as they always were.
SAMPLE_LABELS_DIGEST = "919d79b4afa8471bbe05550bd31b36d19830adcf2e71b7b8a036155e2ff088f6"
SAMPLE_FILES_DIGEST = "ef322ea12d1a41dd5f55796a4ec3c7f2f0b14e5ca30878ca70843271169b6706"
HELD_OUT_LABELS_DIGEST = "eff670f1d7ec54f24597f041d3e373543a7a9781295f7f3c25a315abf6643ba6"
HELD_OUT_FILES_DIGEST = "87c73758bc49b1f823d73fb0a716ecc9396750e4f7ffe114583bf5610619858a"


def sample_digests(root: Path, skip: str | None = None) -> tuple[str, str]:
    """(labels digest, files digest) of a sample folder, as recorded above, without the
    folder ``skip``."""
    labels, every = [], []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or (skip and path.relative_to(root).parts[0] == skip):
            continue
        name = path.relative_to(root).as_posix()
        data = path.read_bytes()
        every.append((name, hashlib.sha256(data).hexdigest()))
        if path.suffix == ".png":
            img = Image.open(path)
            content = f"{img.mode} {img.size}".encode() + img.tobytes()
        elif path.suffix == ".jpg":
            continue
        else:
            content = data
        labels.append((name, hashlib.sha256(content).hexdigest()))
    return tuple(hashlib.sha256(json.dumps(rows).encode()).hexdigest()
                 for rows in (labels, every))


def test_same_seed_same_bytes_as_recorded(sample):
    labels, every = sample_digests(sample[0], skip="held-out")
    assert labels == SAMPLE_LABELS_DIGEST, "the drawn scenes or their labels changed"
    assert every == SAMPLE_FILES_DIGEST, ("same label maps, other file bytes: the images "
                                          "(JPEG) or the encoding of the files changed")
    labels, every = sample_digests(sample[0] / "held-out")
    assert (labels, every) == (HELD_OUT_LABELS_DIGEST, HELD_OUT_FILES_DIGEST)


def test_rerun_replaces_own_sample_and_refuses_foreign_data(tmp_path):
    out = tmp_path / "data"
    write_sample_data(out, seed=0, images=1, size=(32, 64))
    write_sample_data(out, seed=2, images=1, size=(32, 64))     # replaces the earlier one
    assert not list(out.glob(".dsspn-sample-*"))
    assert len(list((out / "mapillary" / "training" / "images").glob("*.jpg"))) == 1
    foreign = tmp_path / "mine"
    (foreign / "cityscapes").mkdir(parents=True)
    (foreign / "cityscapes" / "keep.txt").write_text("real data")
    with pytest.raises(UserError, match="did not write"):
        write_sample_data(foreign, images=1, size=(32, 64))
    assert (foreign / "cityscapes" / "keep.txt").read_text() == "real data"
    assert sorted(p.name for p in foreign.iterdir()) == ["cityscapes"]


def test_interrupted_run_leaves_no_half_dataset(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setitem(S.WRITERS, "mapillary", broken)
    out = tmp_path / "data"
    with pytest.raises(KeyboardInterrupt):
        write_sample_data(out, images=1, size=(32, 64))
    assert not out.exists()                 # not even the folder it made
    out.mkdir()                             # a folder that was there stays, empty
    with pytest.raises(KeyboardInterrupt):
        write_sample_data(out, images=1, size=(32, 64))
    assert list(out.iterdir()) == []


def test_bad_arguments(tmp_path):
    with pytest.raises(UserError):
        write_sample_data(tmp_path / "x", images=0)
    with pytest.raises(UserError):
        write_sample_data(tmp_path / "x", size=(8, 8))


def test_no_torch():
    code = "import sys, dsspn_cli.data.sample; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# -------------------------------------------------------------------------- granularity


def nearest_label(tree, name, dataset):
    for concept in [name, *reversed(tree.ancestors(name))]:
        ids = tree.labels(concept).get(dataset)
        if ids:
            return min(ids)
    return None


def test_label_tables_follow_the_tree(tree, kit):
    ignore = {"cityscapes": 0, "ade": 0, "coco": 255, "mapillary": 65}
    for i, name in enumerate(S.CONCEPTS):
        assert name in tree, name
        for ds in S.DATASETS:
            expected = nearest_label(tree, name, ds)
            assert kit.lut[ds][i] == (ignore[ds] if expected is None else expected), (name, ds)
    lut = {ds: {name: int(kit.lut[ds][i]) for i, name in enumerate(S.CONCEPTS)}
           for ds in S.DATASETS}
    assert lut["cityscapes"]["bicyclist"] == 25 and lut["mapillary"]["bicyclist"] == 20
    assert lut["coco"]["bicyclist"] == 0 and lut["ade"]["bicyclist"] == 13
    assert {lut["ade"][a] for a in ("cat", "dog", "horse", "cow", "bird")} == {127}
    assert [lut["coco"][a] for a in ("cat", "dog", "horse", "cow")] == [16, 17, 18, 20]
    assert lut["coco"]["armchair"] == lut["coco"]["swivel chair"] == 61
    assert (lut["ade"]["armchair"], lut["ade"]["swivel chair"]) == (31, 76)
    assert lut["cityscapes"]["lane marking - general"] == 7
    assert lut["mapillary"]["lane marking - general"] == 24


def test_files_hold_the_drawn_scenes_at_each_granularity(sample, kit):
    """Re-draw the scenes and compare with the files: each dataset labels the same concept map
    with its own ids, at its own granularity."""
    out, _ = sample
    paths = {
        "cityscapes": lambda i: sorted((out / "cityscapes" / "gtFine" / "train").glob(
            "*/*_labelIds.png"), key=lambda p: (int(p.name.split("_")[1]), p.name))[i],
        "ade": lambda i: (out / "ade20k" / "ADEChallengeData2016" / "annotations" /
                          "training" / f"ADE_train_{i + 1:08d}.png"),
    }
    for ds, path_of in paths.items():
        for i in range(N):
            _, cv = S.draw_scene(kit, ds, 0, i, 0, SIZE)
            assert np.array_equal(label(path_of(i)), kit.lut[ds][cv.cmap]), (ds, i)


def scenes(kit, dataset, n, size=(96, 192)):
    for i in range(n):
        _, cv = S.draw_scene(kit, dataset, 0, i, 123, size)
        yield cv


def test_rider_pixels_where_bicyclists_are_drawn(kit):
    bicyclist = kit.index["bicyclist"]
    found = 0
    ignore_only = {lab.id for lab in load_labelset("cityscapes").labels if not lab.mapped} - {0}
    for cv in scenes(kit, "cityscapes", 24):
        ids = kit.lut["cityscapes"][cv.cmap]
        assert not set(np.unique(ids).tolist()) & ignore_only
        where = cv.cmap == bicyclist
        if where.any():
            found += 1
            assert (ids[where] == 25).all()
            assert (kit.lut["mapillary"][cv.cmap][where] == 20).all()
    assert found >= 2


def test_ade_says_animal_where_coco_names_the_species(kit):
    animals = [kit.index[a] for a in ("cat", "dog", "horse", "cow")]
    coco_ids, ade_ids = set(), set()
    for cv in scenes(kit, "ade", 30):
        where = np.isin(cv.cmap, animals)
        ade_ids |= set(np.unique(kit.lut["ade"][cv.cmap][where]).tolist())
        coco_ids |= set(np.unique(kit.lut["coco"][cv.cmap][where]).tolist())
    assert ade_ids == {127}
    assert len(coco_ids) >= 3 and coco_ids <= {16, 17, 18, 20}


def test_scene_types_per_dataset(kit):
    indoor = {kit.index[c] for c in ("bed", "couch", "swivel chair", "floor-wood", "floor-tile",
                                     "carpet")}
    street = {kit.index["road"]}
    for ds, want_indoor in (("cityscapes", False), ("mapillary", False), ("coco", True)):
        has_indoor = has_street = False
        for cv in scenes(kit, ds, 20, (64, 128)):
            present = set(np.unique(cv.cmap).tolist())
            has_indoor |= bool(present & indoor)
            has_street |= bool(present & street)
            assert kit.none not in present          # every pixel is drawn
        assert has_street
        assert has_indoor == want_indoor


def test_colours_follow_the_tree(tree, kit):
    """Siblings look alike: a concept is nearer in colour to its siblings than to concepts of
    other top-level groups (on average over the rendered concepts)."""
    def group(name):
        return ([*tree.ancestors(name), name])[min(S.GROUP_DEPTH, tree.depth(name))]

    rgb = {name: kit.rgb[i] for i, name in enumerate(S.CONCEPTS)}
    same, other = [], []
    for a in S.CONCEPTS:
        for b in S.CONCEPTS:
            if a < b:
                d = float(np.abs(rgb[a] - rgb[b]).sum())
                (same if group(a) == group(b) else other).append(d)
    assert np.mean(same) < 0.6 * np.mean(other)


# ------------------------------------------------------------------------------ COCO JSON


def test_coco_json_reproduces_the_label_maps(sample):
    from pycocotools.coco import COCO

    out, _ = sample
    root = out / "coco-stuff"
    instances_seen = 0
    for folder in ("train2017", "val2017"):
        things = COCO(str(root / "annotations" / f"instances_{folder}.json"))
        stuff = COCO(str(root / "annotations" / f"stuff_{folder}.json"))
        assert {c["id"] for c in stuff.loadCats(stuff.getCatIds())} == set(range(92, 184))
        thing_cats = set(things.getCatIds())
        assert len(thing_cats) == 80 and thing_cats <= set(range(1, 91))
        for image_id in things.getImgIds():
            info = things.loadImgs(image_id)[0]
            png = label(root / "stuffthingmaps_trainval2017" / folder /
                        info["file_name"].replace(".jpg", ".png"))
            assert (info["height"], info["width"]) == png.shape
            painted = np.full(png.shape, 255, np.uint8)
            for ann in stuff.loadAnns(stuff.getAnnIds(imgIds=image_id)):
                assert isinstance(ann["segmentation"], dict)           # RLE
                assert isinstance(ann["segmentation"]["counts"], str)
                assert 92 <= ann["category_id"] <= 182
                painted[stuff.annToMask(ann).astype(bool)] = ann["category_id"] - 1
            for ann in sorted(things.loadAnns(things.getAnnIds(imgIds=image_id)),
                              key=lambda a: a["id"]):
                seg = ann["segmentation"]
                assert isinstance(seg, list) and all(len(p) >= 6 and len(p) % 2 == 0
                                                     for p in seg)      # polygons
                assert ann["iscrowd"] == 0 and ann["area"] > 0 and len(ann["bbox"]) == 4
                mask = things.annToMask(ann).astype(bool)
                assert mask.sum() == ann["area"]
                painted[mask] = ann["category_id"] - 1
                instances_seen += 1
            assert np.array_equal(painted, png), info["file_name"]
    assert instances_seen > 0
