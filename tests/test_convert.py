"""``dsspn data convert``: label maps rewritten in another label set's ids through the tree.

The sample data (real layouts) is converted and every written pixel is compared with tables
checked by hand from the label names; the report's counts with the pixels of the source maps;
the output is read back as a folder dataset (``data check``, one training step); the input
is never written, and a Ctrl-C leaves only whole files.
"""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO

from dsspn_cli.data.common import read_label_png
from dsspn_cli.data.convert import (
    COARSER,
    COVERED,
    EVERYTHING_ELSE,
    NO_CLASS,
    OTHER,
    SEVERAL,
    VOID,
    plan,
)
from dsspn_cli.data.formats import get_format
from dsspn_cli.data.sample import write_sample_data
from dsspn_cli.hierarchy.labelset import load_labelset

# Checked by hand against the label sets: every value the sample maps hold -> the target id.
MAPILLARY_TO_CITYSCAPES = {
    0: 255,     # animal--bird: Cityscapes has no animal class
    3: 13,      # fence
    7: 7,       # construction--flat--bike-lane: finer than road, goes to road
    8: 7,       # crosswalk - plain -> road
    13: 7,      # road
    15: 8,      # sidewalk
    17: 11,     # building
    19: 24,     # human--person -> person
    20: 25,     # human--rider--bicyclist: finer than rider, goes to rider
    23: 7,      # marking--crosswalk-zebra -> road
    24: 7,      # marking--general -> road
    27: 23,     # sky
    30: 21,     # vegetation
    44: 255,    # street light: no Cityscapes class
    46: 17,     # traffic sign frame -> pole
    47: 17,     # utility pole -> pole
    48: 19,     # traffic light
    50: 20,     # traffic sign (front) -> traffic sign
    52: 33,     # bicycle
    54: 28,     # bus
    55: 26,     # car
    61: 27,     # truck
    65: 255,    # void--unlabeled
}
CITYSCAPES_TO_VOC = {
    0: 255,                                   # unlabeled: void stays void
    7: 0, 8: 0, 11: 0, 13: 0, 17: 0, 19: 0,   # road, sidewalk, building, fence, pole,
    20: 0, 21: 0, 23: 0, 27: 0,               # light, sign, vegetation, sky, truck: background
    24: 15, 25: 15,                           # person and rider: person
    26: 7, 28: 6, 33: 2,                      # car, bus, bicycle
}
CITYSCAPES_TO_CAMVID = {                      # CamVid's ignore value is 11
    0: 11, 7: 3, 8: 4, 11: 1, 13: 7, 17: 2, 20: 6, 23: 0, 24: 9, 26: 8,
    19: 11, 27: 11, 28: 11, 33: 11,           # traffic light, truck, bus, bicycle: no class
    21: 11,                                   # vegetation: coarser than Tree (woody plants)
    25: 11,                                   # rider: coarser than Bicyclist
}


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sample")
    write_sample_data(root, seed=0, images=4, size=(64, 128))
    return root


def digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def source_maps(root: Path, format_name: str) -> dict:
    """(split, key) -> the source label map, as the format reads it."""
    fmt = get_format(format_name)
    return {(split, s.key): (s, fmt.read_label(s)) for split in ("train", "val")
            for s in fmt.samples(root, split)}


def assert_written(out: Path, maps: dict, hand: dict, ignore: int | None = None) -> None:
    """Every written label map equals the hand table applied to its source map, pixel for
    pixel; every image is its source's bytes."""
    present = set().union(*(np.unique(values).tolist() for _, values in maps.values()))
    assert present <= set(hand), f"values without a hand-checked target: {present - set(hand)}"
    table = np.full(max(hand) + 1, -1)
    for value, target in hand.items():
        table[value] = target
    for (split, key), (sample, values) in maps.items():
        written = read_label_png(out / "labels" / split / f"{key}.png")
        assert np.array_equal(written, table[values]), key
        image = out / "images" / split / f"{key}{sample.image.suffix}"
        assert image.read_bytes() == sample.image.read_bytes()


def one_error(result) -> str:
    assert result.exit_code == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


# ------------------------------------------------------------------------ whole conversions


def test_mapillary_to_cityscapes_pixel_for_pixel(sample, tmp_path, run):
    root = sample / "mapillary"
    before = digest(root)
    out, report = tmp_path / "out", tmp_path / "report.json"
    result = run("data", "convert", root, "--format", "mapillary", "--to", "cityscapes",
                 "-o", out, "--json", report)
    assert result.exit_code == 0, result.stderr
    maps = source_maps(root, "mapillary")
    assert {20, 7} <= set().union(*(np.unique(v).tolist() for _, v in maps.values()))
    assert_written(out, maps, MAPILLARY_TO_CITYSCAPES)
    assert digest(root) == before                       # nothing written over the input
    # The report counts every pixel of every source label, and says where it went.
    doc = json.loads(report.read_text())
    counts = np.bincount(np.concatenate([v.ravel() for _, v in maps.values()]), minlength=66)
    assert {row["id"]: row["pixels"] for row in doc["labels"]} == {
        i: int(counts[i]) for i in range(66)}
    rows = {row["id"]: row for row in doc["labels"]}
    assert (rows[20]["why"], rows[20]["to"], rows[20]["text"]) == (COVERED, 25, "rider (25)")
    assert (rows[0]["why"], rows[0]["to"]) == (NO_CLASS, None)
    assert doc["pixels"] == sum(v.size for _, v in maps.values())
    assert doc["ignored_pixels"] == int(counts[0] + counts[44] + counts[65])
    assert doc["splits"] == {"train": {"images": 4, "no_label_map": 0, "no_image": 0},
                             "val": {"images": 2, "no_label_map": 0, "no_image": 0}}
    assert "human--rider--bicyclist" in result.stdout and "rider (25)" in result.stdout
    # The target label set is the built-in file itself, so the folder reads as Cityscapes.
    assert (out / "labels.yaml").read_bytes() == (
        REPO / "hierarchies" / "labelsets" / "cityscapes.yaml").read_bytes()
    check = run("data", "check", out, "--format", "folder")
    assert check.exit_code == 0, check.stdout + check.stderr
    assert "train: 4, val: 2" in check.stdout
    # Running it again writes the same files (a conversion stopped half-way is finished so).
    again = run("data", "convert", root, "--format", "mapillary", "--to", "cityscapes",
                "-o", out)
    assert again.exit_code == 0, again.stderr
    assert_written(out, maps, MAPILLARY_TO_CITYSCAPES)


def test_the_converted_dataset_trains(sample, tmp_path, run):
    out = tmp_path / "out"
    assert run("data", "convert", sample / "mapillary", "--format", "mapillary", "--to",
               "cityscapes", "-o", out).exit_code == 0
    result = run("train", "--data", f"folder={out}", "--out", tmp_path / "run", "--iters", "1",
                 "--crop", "64", "--batch-size", "2", "--backbone", "resnet18", "--device",
                 "cpu", "--workers", "0", "--output-stride", "16", "--set", "head.hidden=8")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()


@pytest.mark.parametrize("target,hand,said", [
    ("voc", CITYSCAPES_TO_VOC, ["background (0): everything else"]),
    ("camvid", CITYSCAPES_TO_CAMVID, ["ignore: coarser than the target (Tree)",
                                      "ignore: coarser than the target (Bicyclist)"]),
], ids=["voc-background-takes-the-rest", "camvid-ignore-value-11"])
def test_cityscapes_to_held_out_label_sets(sample, tmp_path, run, target, hand, said):
    root, out = sample / "cityscapes", tmp_path / "out"
    result = run("data", "convert", root, "--format", "cityscapes", "--to", target, "-o", out)
    assert result.exit_code == 0, result.stderr
    assert_written(out, source_maps(root, "cityscapes"), hand)
    assert all(text in result.stdout for text in said), result.stdout
    assert load_labelset(str(out / "labels.yaml")).name == target
    assert run("data", "check", out, "--format", "folder").exit_code == 0


def test_ade_animal_is_coarser_than_cocos_animals_and_counted(sample, tmp_path, run):
    root, out, report = sample / "ade20k", tmp_path / "out", tmp_path / "r.json"
    result = run("data", "convert", root, "--format", "ade", "--to", "coco", "-o", out,
                 "--json", report)
    assert result.exit_code == 0, result.stderr
    maps = source_maps(root, "ade")
    animal = sum(int((values == 127).sum()) for _, values in maps.values())
    assert animal > 0
    row = next(r for r in json.loads(report.read_text())["labels"] if r["id"] == 127)
    assert (row["name"], row["why"], row["to"], row["pixels"]) == ("animal", COARSER, None,
                                                                   animal)
    assert {"cat", "dog"} <= set(row["classes"])
    for (split, key), (_, values) in maps.items():
        written = read_label_png(out / "labels" / split / f"{key}.png")
        assert (written[values == 127] == 255).all()
        assert (written[values == 0] == 255).all()       # ADE's unlabelled: COCO's 255
    assert "ignore: coarser than the target (bird, cat, dog, horse, ...)" in result.stdout
    assert run("data", "check", out, "--format", "folder").exit_code == 0


def test_ids_over_255_are_written_as_16_bit_maps(sample, tmp_path, run):
    wide = tmp_path / "wide.yaml"
    wide.write_text(yaml.safe_dump({"name": "wide", "ignore_index": 1000, "labels": [
        {"id": 300, "name": "road", "synset": "road.n.01"},
        {"id": 7, "name": "car", "synset": "car.n.01"}]}))
    root, out = sample / "cityscapes", tmp_path / "out"
    assert run("data", "convert", root, "--format", "cityscapes", "--to", wide, "-o", out,
               "--split", "val").exit_code == 0
    assert not (out / "images" / "train").exists()
    for (split, key), (_, values) in source_maps(root, "cityscapes").items():
        if split != "val":
            continue
        written = read_label_png(out / "labels" / "val" / f"{key}.png")
        expected = np.where(values == 7, 300, np.where(values == 26, 7, 1000))
        assert np.array_equal(written, expected)
    assert run("data", "check", out, "--format", "folder").exit_code == 0


def test_a_text_label_set_is_written_as_yaml_under_its_own_name(sample, tmp_path, run):
    mine = tmp_path / "mine.txt"
    mine.write_text("road\ncar\nsky\n")
    out = tmp_path / "out"
    assert run("data", "convert", sample / "cityscapes", "--format", "cityscapes", "--to",
               mine, "-o", out).exit_code == 0
    written = load_labelset(str(out / "labels.yaml"))
    assert (written.name, [(label.id, label.name) for label in written.labels]) == (
        "mine", [(0, "road"), (1, "car"), (2, "sky")])
    assert run("data", "check", out, "--format", "folder").exit_code == 0


# ------------------------------------------------------------------------------ the rules


def write_set(path: Path, labels: list, **extra) -> Path:
    path.write_text(yaml.safe_dump({"name": path.stem, "labels": labels, **extra}))
    return path


def routes(tree, source, target, wn=None) -> dict:
    found = plan(tree, load_labelset(str(source)), load_labelset(str(target)), wn)
    return {route.id: route for route in found.routes}


def test_a_sources_own_finer_labels_leave_its_coarser_label_to_the_covering_class(tree,
                                                                                 tmp_path):
    """Mapillary's road means 'road, but none of my lanes and markings': a target class
    below road that Mapillary labels apart (bike lane) does not make it coarser.
    Cityscapes' road has no such labels: it may hold bike lanes, so it is coarser."""
    lanes = write_set(tmp_path / "lanes.yaml", [{"id": 0, "name": "road", "synset": "road.n.01"},
                                                {"id": 1, "name": "bike lane"}])
    mapillary = routes(tree, "mapillary", lanes)
    assert (mapillary[13].why, mapillary[13].to) == (COVERED, 0)
    assert (mapillary[7].why, mapillary[7].to) == (COVERED, 1)
    cityscapes = routes(tree, "cityscapes", lanes)
    assert (cityscapes[7].why, cityscapes[7].to, cityscapes[7].classes) == (
        COARSER, None, ("bike lane",))


def test_the_deepest_covering_class_wins_and_ties_are_ignored(tree, tmp_path):
    deep = write_set(tmp_path / "deep.yaml", [
        {"id": 0, "name": "person", "synset": "person.n.01"},
        {"id": 1, "name": "rider"},
        {"id": 2, "name": "car", "synset": "car.n.01"},
        {"id": 3, "name": "auto", "synset": "car.n.01"}])
    found = routes(tree, "mapillary", deep)
    assert (found[20].why, found[20].to) == (COVERED, 1)      # bicyclist: rider, not person
    assert (found[19].why, found[19].to) == (COVERED, 0)      # person
    assert (found[55].why, found[55].to, found[55].classes) == (SEVERAL, None,
                                                                ("car", "auto"))
    assert found[65].why == VOID


def test_a_target_class_finer_than_the_tree_makes_its_concept_coarser(tree, wn, tmp_path):
    """'poodle' maps onto the tree only as coarser (dog): COCO's dog may be any dog."""
    dogs = write_set(tmp_path / "dogs.yaml", [{"id": 0, "name": "poodle",
                                               "synset": "poodle.n.01"}])
    found = routes(tree, "coco", dogs, wn)
    assert (found[17].why, found[17].classes) == (COARSER, ("poodle",))   # dog
    assert found[16].why == NO_CLASS                                      # cat


def test_a_source_class_of_several_concepts_split_by_the_target_is_ignored(tree, wn):
    """CamVid's Tree is bush and tree: COCO-Stuff has a class for each."""
    found = routes(tree, "camvid", "coco", wn)
    assert found[5].why == SEVERAL and set(found[5].classes) == {"bush", "tree"}
    assert (found[8].why, found[8].to) == (COVERED, 2)                    # Car -> car
    assert found[11].why == VOID                                          # Unlabelled


def test_the_sources_everything_else_class_is_ignored_and_the_targets_takes_the_rest(tree, wn):
    voc = routes(tree, "voc", "cityscapes", wn)
    assert (voc[0].why, voc[0].to) == (EVERYTHING_ELSE, None)             # background
    assert voc[255].why == VOID
    to_voc = routes(tree, "cityscapes", "voc", wn)
    assert (to_voc[7].why, to_voc[7].to) == (OTHER, 0)                    # road: background
    assert (to_voc[25].why, to_voc[25].to) == (COVERED, 15)               # rider: person


def test_the_targets_everything_else_class_never_competes_for_a_concept(tree, tmp_path):
    """A catch-all class with a synset on the tree is still not a concept (as zero-shot
    scoring, predict and 'hierarchy map' read it): it does not tie with the class naming
    that concept (Mapillary's car would be ignored), and takes only what no class takes."""
    odd = write_set(tmp_path / "odd.yaml", [
        {"id": 0, "name": "background", "other": True, "synset": "car.n.01"},
        {"id": 1, "name": "car", "synset": "car.n.01"},
        {"id": 2, "name": "person", "synset": "person.n.01"}])
    found = routes(tree, "mapillary", odd)
    assert (found[55].why, found[55].to) == (COVERED, 1)                  # car, not a tie
    assert (found[19].why, found[19].to) == (COVERED, 2)                  # person
    assert (found[54].why, found[54].to) == (OTHER, 0)                    # bus: the rest
    assert (found[27].why, found[27].to) == (OTHER, 0)                    # sky: the rest


# --------------------------------------------------------------------------- refusals


def test_no_output_inside_over_or_around_the_input(sample, run):
    root = sample / "cityscapes"
    before = digest(root)
    for out, said in ((root / "converted", "lies inside"), (root, "is also an input"),
                      (sample, "holds")):
        line = one_error(run("data", "convert", root, "--format", "cityscapes", "--to", "voc",
                             "-o", out))
        assert said in line, line
    assert not (root / "converted").exists()
    assert digest(root) == before


def test_an_output_holding_another_dataset_is_refused(sample, tmp_path, run):
    root, out = sample / "cityscapes", tmp_path / "out"
    args = ["data", "convert", root, "--format", "cityscapes", "-o", out]
    assert run(*args, "--to", "voc").exit_code == 0
    line = one_error(run(*args, "--to", "camvid"))
    assert "labels.yaml: holds another label set" in line
    stray = out / "labels" / "train" / "stray.png"
    stray.write_bytes(b"")
    line = one_error(run(*args, "--to", "voc"))
    assert "holds 1 file in labels/train that this conversion does not write" in line
    assert str(stray) in line


def test_a_value_outside_the_label_set_is_one_line_naming_the_file(sample, tmp_path, run):
    import shutil

    from PIL import Image

    root = tmp_path / "city"
    shutil.copytree(sample / "cityscapes", root)
    bad = sorted((root / "gtFine" / "val").rglob("*_labelIds.png"))[0]
    values = np.asarray(Image.open(bad)).copy()
    values[0, 0] = 200
    Image.fromarray(values).save(bad)
    line = one_error(run("data", "convert", root, "--format", "cityscapes", "--to", "voc",
                         "-o", tmp_path / "out"))
    assert str(bad) in line and "label values 200 are not in the cityscapes label set" in line
    assert "dsspn data check" in line
    assert not (tmp_path / "out" / "labels.yaml").exists()


def test_splits_a_folder_dataset_cannot_hold_are_refused(sample, tmp_path, run):
    line = one_error(run("data", "convert", sample / "held-out" / "voc", "--format", "voc",
                         "--to", "cityscapes", "-o", tmp_path / "out", "--split", "trainval"))
    assert "--split trainval: a folder dataset has splits train, val, test" in line
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------- Ctrl-C


SLOW = """
import sys, time
from dsspn_cli.data import convert

written = convert.atomic_write_bytes

def slow(*args, **kwargs):
    with open({marks!r}, "a") as marks:
        marks.write("x")
    time.sleep(0.3)
    return written(*args, **kwargs)

convert.atomic_write_bytes = slow
from dsspn_cli.cli.main import main
main(sys.argv[1:])
"""


def test_ctrl_c_leaves_whole_files_and_a_second_run_finishes(tmp_path, run):
    write_sample_data(tmp_path / "d", seed=0, images=16, size=(32, 64))
    root, out, marks = tmp_path / "d" / "cityscapes", tmp_path / "out", tmp_path / "marks"
    args = ["data", "convert", str(root), "--format", "cityscapes", "--to", "voc", "-o",
            str(out), "--workers", "2"]
    proc = subprocess.Popen([sys.executable, "-c", SLOW.format(marks=str(marks)), *args],
                            cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while not marks.exists() or not marks.read_text():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "writing never began"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "stopped: interrupted by SIGINT"
    # The jobs in flight finished both their files; the queued ones were dropped.
    files = [p for p in out.rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.startswith(".")], "a temporary file was left"
    labels = sorted(p.stem for p in (out / "labels").rglob("*.png"))
    images = sorted(p.stem for p in (out / "images").rglob("*.png"))
    assert labels == images and 0 < len(labels) < 20
    for path in (out / "labels").rglob("*.png"):
        read_label_png(path)                           # whole, readable
    assert not (out / "labels.yaml").exists()          # not a finished dataset
    assert run(*args).exit_code == 0
    assert run("data", "check", out, "--format", "folder").exit_code == 0


def test_convert_never_imports_torch(sample, tmp_path):
    code = ("import sys\nfrom dsspn_cli.cli.main import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as exc:\n    assert not exc.code\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    done = subprocess.run([sys.executable, "-c", code, "data", "convert",
                           str(sample / "cityscapes"), "--format", "cityscapes", "--to", "voc",
                           "-o", str(tmp_path / "out")], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
