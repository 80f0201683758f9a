"""MSeg's held-out test sets: their readers on files written here in each real layout, their
label sets against the official lists, and the held-out sample sets."""

import csv
from pathlib import Path

import numpy as np
import pytest
from conftest import REFERENCE
from PIL import Image

from dsspn_cli.data.audit import check_dataset
from dsspn_cli.data.common import BadFile, MissingSplit
from dsspn_cli.data.formats import FORMATS, get_format
from dsspn_cli.errors import UserError
from dsspn_cli.hierarchy.labelset import builtin_labelsets, load_labelset

HELD_OUT = ("voc", "pascal-context", "pascal-context-60", "camvid", "kitti", "wilddash",
            "scannet")


def save(path, array, mode=None, palette=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.asarray(array, dtype=np.uint8), mode=mode)
    if palette is not None:
        image.putpalette(palette)
    image.save(path)
    return path


def photo(h=6, w=8):
    return np.full((h, w, 3), 90, np.uint8)


def values(fmt, sample):
    return sorted(np.unique(fmt.read_label(sample)).tolist())


def by_key(samples):
    return {s.key: s for s in samples}


# ----------------------------------------------------------------------------- Pascal VOC

VOC_PALETTE = load_labelset("voc")


def voc_palette() -> bytes:
    colours = np.zeros((256, 3), np.uint8)
    for label in VOC_PALETTE.labels:
        colours[label.id] = label.extra["color"]
    return colours.tobytes()


def make_voc(root, year="VOC2012", labels="SegmentationClass", lists="Segmentation"):
    base = root / "VOCdevkit" / year
    lab = np.zeros((6, 8), np.uint8)
    lab[1:5, 2:6] = 255                       # the void border around the object
    lab[2:4, 3:5] = 15                        # a person: palette colour 192,128,128
    for key in ("2007_000032", "2007_000033", "2007_000039"):
        save(base / "JPEGImages" / f"{key}.jpg", photo())
    for key in ("2007_000032", "2007_000033"):
        save(base / labels / f"{key}.png", lab, "P", voc_palette())
    sets = base / "ImageSets" / lists
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("2007_000032\n")
    (sets / "val.txt").write_text("2007_000033\n2007_000039\n\n")
    (sets / "trainval.txt").write_text("2007_000032\n2007_000033\n2007_000039\n")
    return root


def test_voc_reads_palette_indices_not_colours(tmp_path):
    root = make_voc(tmp_path / "voc")
    label = root / "VOCdevkit/VOC2012/SegmentationClass/2007_000032.png"
    assert Image.open(label).mode == "P"
    fmt = get_format("pascal-voc")
    train = fmt.samples(root, "train")
    assert [s.key for s in train] == ["2007_000032"]
    assert values(fmt, train[0]) == [0, 15, 255]          # ids, not RGB
    val = by_key(fmt.samples(root, "val"))
    assert list(val) == ["2007_000033", "2007_000039"]     # the list's order
    assert val["2007_000039"].label is None                # listed, no label map
    assert len(fmt.samples(root, "trainval")) == 3
    # ROOT may be the dataset's own folder too
    assert len(fmt.samples(root / "VOCdevkit" / "VOC2012", "train")) == 1
    assert fmt.held_out and fmt.test_split == "val"


def test_voc_check_finds_missing_labels_and_values_outside_the_set(tmp_path):
    root = make_voc(tmp_path / "voc")
    report = check_dataset(root, "voc")
    assert report.counts == {"train": 1, "val": 2, "trainval": 3}
    problems = {(p.file.rsplit("/", 1)[-1], p.problem) for p in report.problems}
    assert ("2007_000039.jpg", "image without a label map") in problems
    save(root / "VOCdevkit/VOC2012/SegmentationClass/2007_000032.png",
         np.full((6, 8), 21, np.uint8), "P", voc_palette())
    report = check_dataset(root, "voc", ["train"])
    assert [p.problem for p in report.problems] == ["label values 21 are not in the label set"]


def test_voc_without_its_lists_says_what_is_missing(tmp_path):
    root = make_voc(tmp_path / "voc")
    (root / "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt").unlink()
    with pytest.raises(MissingSplit, match=r"not a voc layout \(.*val.txt is missing\)"):
        get_format("voc").samples(root, "val")
    with pytest.raises(UserError, match="--split test: voc has splits train, val, trainval"):
        check_dataset(root, "voc", ["test"])


# -------------------------------------------------------------------------- Pascal Context


def test_pascal_context_59_drops_background_and_60_keeps_it(tmp_path):
    root = make_voc(tmp_path / "pc", "VOC2010", "SegmentationClassContext", "SegmentationContext")
    lab = np.zeros((6, 8), np.uint8)          # 0 = background
    lab[0] = 1                                # aeroplane
    lab[1] = 59                               # wood
    lab[2] = 37                               # person (36 in the 59 classes)
    path = root / "VOCdevkit/VOC2010/SegmentationClassContext/2007_000032.png"
    save(path, lab)
    pc59, pc60 = get_format("pascal-context"), get_format("pascal-context-60")
    sample = pc59.samples(root, "train")[0]
    read = pc59.read_label(sample)
    assert read[0, 0] == 0 and read[1, 0] == 58 and read[2, 0] == 36 and read[3, 0] == 255
    names = {label.id: label.name for label in load_labelset("pascal-context").labels}
    assert (names[0], names[58], names[36]) == ("aeroplane", "wood", "person")
    assert values(pc60, sample) == [0, 1, 37, 59]
    assert load_labelset("pc60").label(0).extra["other"] is True
    assert sorted(pc59.splits) == ["train", "val"]
    assert check_dataset(root, "pc59", ["train"]).ok
    lab[3] = 60                               # not a Pascal Context value
    save(path, lab)
    for fmt in (pc59, pc60):
        with pytest.raises(BadFile, match="values 60 are not Pascal Context's"):
            fmt.read_label(sample)


# --------------------------------------------------------------------------------- CamVid


def make_camvid(root):
    for split, stems in (("train", ["0001TP_006690", "0006R0_f00930"]),
                         ("val", ["0016E5_07959"]), ("test", ["0001TP_008550"])):
        for stem in stems:
            save(root / "CamVid" / split / f"{stem}.png", photo())
            lab = np.full((6, 8), 3, np.uint8)   # road
            lab[0] = 0                            # sky
            lab[1, :2] = 11                       # Unlabelled
            lab[5, :2] = 10                       # bicyclist
            save(root / "CamVid" / f"{split}annot" / f"{stem}.png", lab)
    return root


def test_camvid_splits_and_ids(tmp_path):
    root = make_camvid(tmp_path / "data")
    fmt = get_format("camvid-11")
    assert [len(fmt.samples(root, s)) for s in ("train", "val", "test")] == [2, 1, 1]
    sample = fmt.samples(root, "test")[0]
    assert sample.key == "0001TP_008550"
    assert values(fmt, sample) == [0, 3, 10, 11]
    assert load_labelset("camvid").ignore_index == 11
    assert fmt.test_split == "test"
    report = check_dataset(root / "CamVid", "camvid")     # ROOT: CamVid itself
    assert report.ok and report.counts == {"train": 2, "val": 1, "test": 1}
    save(root / "CamVid/valannot/0016E5_07959.png", np.full((6, 8), 12, np.uint8))
    (root / "CamVid/test/0001TP_008550.png").unlink()
    problems = [p.problem for p in check_dataset(root, "camvid").problems]
    assert problems == ["label values 12 are not in the label set",
                        "label map without an image (expected 0001TP_008550.png)"]


# ---------------------------------------------------------------------------------- KITTI


def test_kitti_reads_cityscapes_label_ids(tmp_path):
    root = tmp_path / "data_semantics"
    for i in range(2):
        save(root / "training" / "image_2" / f"{i:06d}_10.png", photo())
        lab = np.full((6, 8), 7, np.uint8)        # road
        lab[0] = 23                               # sky
        lab[1] = 1                                # ego vehicle: ignored
        save(root / "training" / "semantic" / f"{i:06d}_10.png", lab)
    save(root / "testing" / "image_2" / "000000_10.png", photo())   # no labels: not read
    fmt = get_format("kitti")
    samples = fmt.samples(root, "train")
    assert [s.key for s in samples] == ["000000_10", "000001_10"]
    assert values(fmt, samples[0]) == [1, 7, 23]
    kitti = load_labelset("kitti")
    assert kitti.label(1).ignore and kitti.label(26).extra["train_id"] == 13
    assert len(kitti.mapped_labels) == 19
    report = check_dataset(root, "kitti")
    assert report.ok and report.counts == {"train": 2}
    assert fmt.test_split == "train"


# ------------------------------------------------------------------------------- WildDash


def test_wilddash_label_maps_beside_the_images(tmp_path):
    folder = tmp_path / "wd" / "wd_val_01"
    for stem in ("au0000_100000", "cn0001_100000"):
        save(folder / f"{stem}.png", photo())
        lab = np.full((6, 8), 26, np.uint8)       # car
        lab[0] = 0                                # unlabeled
        save(folder / f"{stem}_labelIds.png", lab)
    save(folder / "de0002_100000_labelIds.png", np.zeros((6, 8), np.uint8))   # no image
    fmt = get_format("wilddash")
    samples = by_key(fmt.samples(tmp_path / "wd", "val"))
    assert sorted(samples) == ["au0000_100000", "cn0001_100000", "de0002_100000"]
    assert samples["de0002_100000"].extra == {"missing": "image"}
    assert values(fmt, samples["au0000_100000"]) == [0, 26]
    assert len(fmt.samples(folder, "val")) == 3           # ROOT: wd_val_01 itself
    report = check_dataset(tmp_path / "wd", "wilddash")
    assert report.counts == {"val": 2}
    assert [p.problem for p in report.problems] == [
        "label map without an image (expected de0002_100000.png)"]


# -------------------------------------------------------------------------------- ScanNet


def make_scannet(root):
    base = root / "scannet_frames_25k"
    nyu40 = np.array([[1, 2, 14, 39], [0, 13, 40, 24]], np.uint8)   # 13 pillow, 40 otherprop
    for scene in ("scene0000_00", "scene0011_00"):
        for frame in ("000000", "000100"):
            save(base / scene / "color" / f"{frame}.jpg", photo(2, 4))
            save(base / scene / "label" / f"{frame}.png", nyu40)
    (base / "scannetv2_train.txt").write_text("scene0000_00\n")
    (base / "scannetv2_val.txt").write_text("scene0011_00\n")
    return root


def test_scannet_maps_nyu40_to_the_20_classes(tmp_path):
    root = make_scannet(tmp_path / "scannet")
    fmt = get_format("scannet-20")
    samples = fmt.samples(root, "val")
    assert [s.key for s in samples] == ["scene0011_00_000000", "scene0011_00_000100"]
    read = fmt.read_label(samples[0])
    # wall 0, floor 1, desk 12, otherfurniture 19, refrigerator 14; the rest not scored
    assert read.tolist() == [[0, 1, 12, 19], [255, 255, 255, 14]]
    names = {label.id: label.name for label in load_labelset("scannet").labels}
    assert (names[12], names[19], names[14]) == ("desk", "otherfurniture", "refrigerator")
    report = check_dataset(root, "scannet")
    assert report.ok and report.counts == {"train": 2, "val": 2}


def test_scannet_problems(tmp_path):
    root = make_scannet(tmp_path / "scannet")
    base = root / "scannet_frames_25k"
    save(base / "scene0011_00" / "label" / "000100.png", np.full((2, 4), 41, np.uint8))
    (base / "scannetv2_val.txt").write_text("scene0011_00\nscene0999_00\n")
    problems = {(p.file.split("scannet_frames_25k/")[-1], p.problem)
                for p in check_dataset(root, "scannet", ["val"]).problems}
    assert ("scene0999_00/color", "missing") in problems
    assert any(file == "scene0011_00/label/000100.png" and "values 41 are not NYUv2-40 ids"
               in problem for file, problem in problems)
    for name in ("scannetv2_train.txt", "scannetv2_val.txt"):
        (base / name).unlink()
    with pytest.raises(UserError, match="no scannetv2_train.txt: ScanNet's splits are lists"):
        check_dataset(root, "scannet")


# ------------------------------------------------------------------------------ label sets


def reference_rows(name):
    lines = [line for line in (REFERENCE / name).read_text().splitlines()
             if not line.startswith("#")]
    return list(csv.DictReader(lines, delimiter="\t"))


def colour(text):
    return [int(v) for v in text.split(",")] if text else None


@pytest.mark.parametrize("name", HELD_OUT)
def test_every_held_out_set_loads_with_reviewed_synsets(name, wn):
    fmt = get_format(name)
    labelset = load_labelset(fmt.labelset)
    assert labelset.name == fmt.name and labelset.extra["held_out"] is True
    assert fmt.held_out and fmt.test_split in fmt.splits
    for label in labelset.mapped_labels:
        assert label.synset, f"{name} {label.name}"
        assert wn.synset(label.synset).pos() == "n"
    for alias in labelset.aliases:
        assert builtin_labelsets()[alias].stem == labelset.name
    others = [label.name for label in labelset.labels if label.extra.get("other")]
    assert others == (["background"] if name in ("voc", "pascal-context-60") else [])


def test_reviewed_senses():
    voc = {label.name: label.synset for label in load_labelset("voc").labels}
    assert voc["pottedplant"] == "pot_plant.n.01"
    assert voc["tvmonitor"] == "television_receiver.n.01"
    assert voc["cow"] == "cattle.n.01" and voc["boat"] == "vessel.n.02"   # ships too
    context = {label.name: label.synset for label in load_labelset("pascal-context").labels}
    assert context["mouse"] == "mouse.n.04" and context["track"] == "track.n.03"
    camvid = {label.name: label.synset for label in load_labelset("camvid").labels}
    assert camvid["Pavement"] == "sidewalk.n.01"    # not the road's paved surface
    assert camvid["Bicyclist"] == "cyclist.n.01"


def test_held_out_sets_are_no_training_formats_of_the_shipped_tree(tree):
    assert set(HELD_OUT) <= set(FORMATS)
    assert not set(HELD_OUT) & set(tree.datasets)
    assert not any(fmt.held_out for name, fmt in FORMATS.items() if name in tree.datasets)


# The official files (dev machines only): (label set, file, name column, colour column, ids).
OFFICIAL = [
    ("voc", "pascal_voc_2012.tsv", "name", "color", None),
    ("pascal-context", "pascal_context_59.tsv", "name", "color", None),
    ("pascal-context-60", "pascal_context_60.tsv", "name", "color", None),
    ("camvid", "camvid_11.tsv", "name", "color", None),
    ("kitti", "kitti_semantics.tsv", "name", "color", None),
    ("wilddash", "wilddash.tsv", "v1_name", "v1_color", range(34)),
    ("scannet", "scannet_20.tsv", "name", "color", None),
]


@pytest.mark.skipif(not REFERENCE.exists(), reason="shared reference label sets not present "
                    "(they sit beside the repository on dev machines only)")
@pytest.mark.parametrize("name,tsv,name_column,colour_column,ids", OFFICIAL)
def test_ids_names_and_colours_equal_the_official_lists(name, tsv, name_column, colour_column,
                                                        ids):
    labelset = load_labelset(name)
    rows = [r for r in reference_rows(tsv) if ids is None or int(r["id"]) in ids]
    official = {int(r["id"]): (r[name_column], colour(r[colour_column])) for r in rows}
    ours = {label.id: (label.name, label.extra.get("color")) for label in labelset.labels}
    for label_id, (official_name, official_colour) in official.items():
        if label_id == labelset.ignore_index:
            # the void row: the files call it 'void (border / difficult; ignore)' and such
            assert label_id in ours and labelset.label(label_id).ignore
            continue
        assert ours[label_id] == (official_name.split(" (")[0], official_colour), label_id
    extra = set(ours) - set(official) - {labelset.ignore_index}
    assert not extra


@pytest.mark.skipif(not REFERENCE.exists(), reason="shared reference label sets not present")
def test_mseg_ids_and_nyu40_ids_equal_the_official_lists():
    for name, tsv, column in (("voc", "pascal_voc_2012.tsv", "mseg_voc2012_id"),
                              ("camvid", "camvid_11.tsv", "mseg_camvid11_id"),
                              ("pascal-context-60", "pascal_context_60.tsv", "mseg_pc60_id"),
                              ("scannet", "scannet_20.tsv", "mseg_scannet20_id")):
        ours = {label.id: label.extra.get("mseg_id") for label in load_labelset(name).labels}
        assert {int(r["id"]): int(r[column]) for r in reference_rows(tsv)} == {
            i: ours[i] for i in (int(r["id"]) for r in reference_rows(tsv))}
    scannet = {label.id: label.extra.get("nyu40_id") for label in
               load_labelset("scannet").mapped_labels}
    assert scannet == {int(r["id"]): int(r["nyu40_id"]) for r in reference_rows("scannet_20.tsv")}
    context = {label.id: label.extra["png_value"] for label in load_labelset("pc59").labels}
    assert context == {int(r["id"]): int(r["png_value_on_disk"])
                       for r in reference_rows("pascal_context_59.tsv")}


# --------------------------------------------------------------------- the commands


def test_labelsets_command_marks_the_held_out_sets(run):
    result = run("hierarchy", "labelsets")
    assert result.exit_code == 0
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines()
            if line.startswith("│")}
    for name in ("voc", "camvid", "kitti", "wilddash", "scannet", "pascal-context",
                 "pascal-context-60"):
        assert "held-out test" in rows[name]
    assert "training" in rows["cityscapes"]


def test_data_check_and_stats_on_a_held_out_set(run, tmp_path):
    root = make_camvid(tmp_path / "data")
    result = run("data", "check", root, "--format", "camvid")
    assert result.exit_code == 0 and "clean" in result.stdout
    result = run("data", "stats", root, "--format", "camvid", "--split", "test")
    assert result.exit_code == 2
    assert "held-out test set, not a dataset of this tree" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------- held-out sample sets


SIZE = (64, 128)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    from dsspn_cli.data.sample import write_sample_data

    out = tmp_path_factory.mktemp("sample") / "data"
    write_sample_data(out, seed=0, images=8, size=SIZE)      # 2 validation images
    return out


@pytest.fixture(scope="module")
def kit(tree):
    from dsspn_cli.data.sample import ConceptKit

    return ConceptKit(tree)


def test_held_out_samples_read_back_in_their_own_classes(sample, kit):
    from dsspn_cli.data.sample import draw_scene, held_out_datasets
    from dsspn_cli.data.sample.layouts.camvid import CLASSES as CAMVID
    from dsspn_cli.data.sample.layouts.voc import CLASSES as VOC
    from dsspn_cli.data.sample.layouts.voc import void_outlines

    sets = held_out_datasets(sample)
    assert sets == {"camvid": str(sample / "held-out" / "camvid"),
                    "voc": str(sample / "held-out" / "voc")}
    for name, split, number in (("camvid", "test", 2), ("voc", "val", 1)):
        report = check_dataset(sets[name], name)
        assert report.ok and report.counts == {split: 2}, report.problems
        fmt = get_format(name)
        labelset = load_labelset(name)
        classes = CAMVID if name == "camvid" else VOC
        rest = labelset.ignore_index if name == "camvid" else 0
        table = kit.table_of(labelset, classes, rest)
        for i, sample_ in enumerate(fmt.samples(Path(sets[name]), split)):
            _, cv = draw_scene(kit, name, number, i, 0, SIZE)
            want = table[cv.cmap]
            if name == "voc":
                want = void_outlines(want, 0)
                assert Image.open(sample_.label).mode == "P"
            assert np.array_equal(fmt.read_label(sample_), want), (name, i)


def test_voc_samples_have_void_bands_between_objects_and_background(sample):
    fmt = get_format("voc")
    found = 0
    for sample_ in fmt.samples(sample / "held-out" / "voc", "val"):
        labels = fmt.read_label(sample_)
        objects = (labels != 0) & (labels != 255)
        background = labels == 0
        # no object pixel touches a background pixel: the void band lies between them
        assert not (objects[1:] & background[:-1]).any()
        assert not (objects[:-1] & background[1:]).any()
        assert not (objects[:, 1:] & background[:, :-1]).any()
        found += int(objects.any() and (labels == 255).any())
    assert found


def derived_class(tree, wn, concept, synsets):
    """The class of a drawn concept as the label set's synsets say: the first class whose
    synset is the synset of the concept or of a tree ancestor, or a WordNet hypernym of one."""
    for name in [concept, *reversed(tree.ancestors(concept))]:
        synset = tree.node(name).get("synset")
        if not synset:
            continue
        found = wn.synset(synset)
        for candidate in [found, *found.closure(lambda s: s.hypernyms()
                                                 + s.instance_hypernyms())]:
            if candidate.name() in synsets:
                return synsets[candidate.name()]
    return None


@pytest.mark.parametrize("name", ["camvid", "voc"])
def test_sample_classes_mean_what_the_label_sets_synsets_say(name, kit, tree, wn):
    """The hand-written tables give a drawn concept the class WordNet puts it in, and no other:
    a model scored zero-shot on the samples is scored on what the classes mean."""
    from dsspn_cli.data.sample import INDOOR_CONCEPTS, LANDSCAPE_CONCEPTS, STREET_CONCEPTS
    from dsspn_cli.data.sample.layouts import camvid, voc

    labelset = load_labelset(name)
    synsets = {label.synset: label.name for label in labelset.mapped_labels
               if not label.extra.get("other")}
    drawn = STREET_CONCEPTS if name == "camvid" else (
        STREET_CONCEPTS + INDOOR_CONCEPTS + LANDSCAPE_CONCEPTS)
    table = (camvid if name == "camvid" else voc).CLASSES
    for concept in dict.fromkeys(drawn):
        node = kit.nodes[kit.index[concept]]
        assert table.get(concept) == derived_class(tree, wn, node, synsets), concept


def test_training_without_data_never_reads_the_held_out_sets(tmp_path, monkeypatch):
    from dsspn_cli.data import sample as S
    from dsspn_cli.data.sample import ensure_sample_data, sample_datasets

    written = []
    real = S.write_sample_data
    monkeypatch.setattr(S, "write_sample_data", lambda root: written.append(root) or real(
        root, images=1, size=(32, 64)))
    sets = ensure_sample_data(tmp_path / "cache")
    assert sorted(sets) == ["ade", "cityscapes", "coco", "mapillary"]
    assert not any("held-out" in folder for folder in sets.values())
    assert sets == sample_datasets(tmp_path / "cache")
    assert (tmp_path / "cache" / "held-out" / "voc").is_dir()
    # a cache written before the held-out sets existed is written again, once
    import shutil
    shutil.rmtree(tmp_path / "cache" / "held-out")
    ensure_sample_data(tmp_path / "cache")
    ensure_sample_data(tmp_path / "cache")
    assert len(written) == 2
