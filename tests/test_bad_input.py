"""Bad input to every command: one line naming the problem, exit code 2, never a traceback.

Each case builds a real broken thing (a corrupt JPEG, a PNG cut short, a label id the label
set lacks, a malformed YAML file, a tree with a cycle, a checkpoint of another tree, a pickle
that would run code) and runs the real command on it.
"""
import json
import os
import pickle

import numpy as np
import pytest
import torch
from conftest import REPO, write_yaml
from PIL import Image

from dsspn_cli.data.sample import write_sample_data
from dsspn_cli.engine.train import TrainConfig, train

MARKER = "pwned-marker"


class RunsCode:
    """Unpickling this calls os.system: a loader that runs code creates the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def cityscapes_copy(source, target, damage=None):
    """A copy of sample Cityscapes data; ``damage(images, labels)`` breaks a val sample."""
    import shutil

    shutil.copytree(source, target)
    images = sorted((target / "leftImg8bit" / "val").rglob("*.png"))
    labels = sorted((target / "gtFine" / "val").rglob("*_labelIds.png"))
    if damage is not None:
        damage(images, labels)
    for split in ("train",):                   # the same damage in train, for `dsspn train`
        t_images = sorted((target / "leftImg8bit" / split).rglob("*.png"))
        t_labels = sorted((target / "gtFine" / split).rglob("*_labelIds.png"))
        if damage is not None:
            damage(t_images, t_labels)
    return target


def corrupt_image(images, labels):
    images[0].write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(200))


def truncated_label(images, labels):
    labels[0].write_bytes(labels[0].read_bytes()[:70])


def foreign_label_value(images, labels):
    values = np.array(Image.open(labels[0]))
    values[3, 3] = 99
    Image.fromarray(values).save(labels[0])


def size_mismatch(images, labels):
    values = np.array(Image.open(labels[0]))
    Image.fromarray(values[:, :40]).save(labels[0])


@pytest.fixture(scope="module")
def ws(tmp_path_factory, wn):
    """Sample data, damaged copies, a trained checkpoint, another tree's checkpoint, and
    broken files of every kind."""
    root = tmp_path_factory.mktemp("ws")
    write_sample_data(root / "sample", seed=0, images=4, size=(64, 128))
    city = root / "sample" / "cityscapes"
    w = {"root": root, "city": city}
    for name, damage in [("corrupt", corrupt_image), ("truncated", truncated_label),
                         ("foreign", foreign_label_value), ("mismatch", size_mismatch)]:
        w[name] = cityscapes_copy(city, root / name, damage)
    common = dict(iters=1, batch_size=2, crop=64, backbone="resnet18", output_stride=16,
                  workers=0, checkpoint_every=1, val_images=1, head={"hidden": 8},
                  device="cpu")
    train(TrainConfig(data={"cityscapes": str(city)}, out=str(root / "run"), **common))
    w["ckpt"] = root / "run" / "checkpoints" / "last.pt"
    from dsspn_cli.cli.main import main
    try:
        main(["hierarchy", "merge", "cityscapes", "-o", str(root / "city-tree.yaml")])
    except SystemExit as exc:
        assert exc.code in (0, None)
    w["city_tree"] = root / "city-tree.yaml"
    train(TrainConfig(data={"cityscapes": str(city)}, out=str(root / "other"),
                      tree=str(w["city_tree"]), **common))
    w["other_ckpt"] = root / "other" / "checkpoints" / "last.pt"

    (root / "empty").mkdir()
    w["empty"] = root / "empty"
    w["text"] = root / "notes.pt"
    w["text"].write_text("these are not weights\n")
    w["noise"] = root / "noise.pt"
    w["noise"].write_bytes(os.urandom(4096))
    w["tensor"] = root / "tensor.pt"
    torch.save(torch.zeros(3), w["tensor"])
    w["evil"] = root / "evil.pt"
    w["evil"].write_bytes(pickle.dumps({"model": RunsCode(root / MARKER)}))
    w["evil_zip"] = root / "evil-zip.pt"
    torch.save({"format": "dsspn-checkpoint", "x": RunsCode(root / MARKER)}, w["evil_zip"])
    w["corrupt_jpg"] = root / "photo.jpg"
    w["corrupt_jpg"].write_bytes(b"\xff\xd8\xff\xe0garbage" + os.urandom(100))
    w["truncated_png"] = root / "cut.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 90).save(root / "full.png")
    w["truncated_png"].write_bytes((root / "full.png").read_bytes()[:80])
    w["bad_yaml"] = root / "bad.yaml"
    w["bad_yaml"].write_text("name: [unclosed\nlabels:\n  - {id: 1\n")
    w["list_yaml"] = root / "list.yaml"
    w["list_yaml"].write_text("- just\n- a list\n")
    w["bad_labelset"] = write_yaml(root / "dup-ids.yaml", {
        "name": "dup", "labels": [{"id": 1, "name": "cat", "synset": "cat.n.01"},
                                  {"id": 1, "name": "dog", "synset": "dog.n.01"}]})
    w["cycle"] = root / "cycle.json"
    w["cycle"].write_text(json.dumps({
        "directed": True, "multigraph": False, "graph": {"format": "dsspn-concept-tree",
                                                          "version": 1, "datasets": {}},
        "nodes": [{"id": "entity"}, {"id": "a"}, {"id": "b"}],
        "links": [{"source": "entity", "target": "a"}, {"source": "a", "target": "b"},
                  {"source": "b", "target": "a"}]}))
    w["cycle_yaml"] = write_yaml(root / "cycle.yaml", {
        "format": "dsspn-concept-tree", "version": 1, "max_depth": 5, "datasets": {},
        "tree": {"name": "entity", "children": [
            {"name": "a", "children": [{"name": "b", "children": [{"name": "a"}]}]}]}})
    w["bad_config"] = write_yaml(root / "config.yaml", {"iters": "ten", "batch_size": 2})
    w["bad_scale"] = write_yaml(root / "scale.yaml", {"scale": 3})
    return w


def expect_clean_error(result, *fragments):
    assert result.exit_code == 2, (result.exit_code, result.stderr, result.stdout)
    assert "Traceback" not in result.stderr + result.stdout
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    errors = [l for l in lines if l.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])


TRAIN = ["--iters", "1", "--batch-size", "2", "--crop", "64", "--backbone", "resnet18",
         "--output-stride", "16", "--workers", "0"]

CASES = {
    # images and label maps
    "predict: corrupt image": (lambda w: ["predict", "--model", w["ckpt"],
                                          w["corrupt_jpg"], "--out",
                                          w["root"] / "p1"], ["photo.jpg", "unreadable"]),
    "predict: truncated png": (lambda w: ["predict", "--model", w["ckpt"],
                                          w["truncated_png"], "--out",
                                          w["root"] / "p2"], ["cut.png", "truncated"]),
    "predict: empty folder": (lambda w: ["predict", "--model", w["ckpt"],
                                         w["empty"]], ["no images"]),
    "evaluate: corrupt image": (lambda w: ["evaluate", w["ckpt"], "--data",
                                           f"cityscapes={w['corrupt']}"], ["unreadable image"]),
    "evaluate: truncated label": (lambda w: ["evaluate", w["ckpt"], "--data",
                                             f"cityscapes={w['truncated']}"],
                                  ["unreadable label map"]),
    "evaluate: label outside the set": (lambda w: ["evaluate", w["ckpt"], "--data",
                                                   f"cityscapes={w['foreign']}"],
                                        ["label values 99 are not in the cityscapes"]),
    "evaluate: size mismatch": (lambda w: ["evaluate", w["ckpt"], "--data",
                                           f"cityscapes={w['mismatch']}"],
                                ["differs from its image"]),
    "evaluate: empty folder": (lambda w: ["evaluate", w["ckpt"], "--data",
                                          f"cityscapes={w['empty']}"], ["not a cityscapes"]),
    "train: corrupt image": (lambda w: ["train", "--data", f"cityscapes={w['corrupt']}",
                                        "--out", w["root"] / "t1", *TRAIN],
                             ["cannot be used", "--skip-bad"]),
    "train: truncated label": (lambda w: ["train", "--data", f"cityscapes={w['truncated']}",
                                          "--out", w["root"] / "t2", *TRAIN],
                               ["cannot be used"]),
    "train: label outside the set": (lambda w: ["train", "--data",
                                                f"cityscapes={w['foreign']}", "--out",
                                                w["root"] / "t3", *TRAIN], ["cannot be used"]),
    "train: size mismatch": (lambda w: ["train", "--data", f"cityscapes={w['mismatch']}",
                                        "--out", w["root"] / "t4", *TRAIN],
                             ["cannot be used"]),
    "train: empty folder": (lambda w: ["train", "--data", f"cityscapes={w['empty']}",
                                       "--out", w["root"] / "t5", *TRAIN],
                            ["not a cityscapes"]),
    "data stats: label outside the set": (lambda w: ["data", "stats", w["foreign"],
                                                     "--format", "cityscapes", "--split",
                                                     "val"], ["99"]),
    "data stats: empty folder": (lambda w: ["data", "stats", w["empty"], "--format",
                                            "cityscapes"], ["not a cityscapes"]),
    "data check: empty folder": (lambda w: ["data", "check", w["empty"], "--format",
                                            "cityscapes"], ["not a cityscapes"]),
    # malformed YAML: trees, label sets, configs
    "hierarchy show: malformed yaml": (lambda w: ["hierarchy", "show", w["bad_yaml"]],
                                       ["bad.yaml", "malformed YAML"]),
    "hierarchy check: malformed yaml": (lambda w: ["hierarchy", "check", w["bad_yaml"]],
                                        ["malformed YAML"]),
    "hierarchy tables: not a tree": (lambda w: ["hierarchy", "tables", w["list_yaml"], "-o",
                                                w["root"] / "tables"], ["list.yaml"]),
    "hierarchy merge: malformed label set": (lambda w: ["hierarchy", "merge", w["bad_yaml"]],
                                             ["malformed YAML"]),
    "hierarchy merge: duplicate ids": (lambda w: ["hierarchy", "merge", w["bad_labelset"]],
                                       ["dup-ids.yaml"]),
    "hierarchy merge: unknown label set": (lambda w: ["hierarchy", "merge", "kitti-9000"],
                                           ["kitti-9000"]),
    "train: malformed tree": (lambda w: ["train", "--tree", w["bad_yaml"], "--data",
                                         f"cityscapes={w['city']}", "--out", w["root"] / "t6",
                                         *TRAIN], ["malformed YAML"]),
    "train: malformed config": (lambda w: ["train", "--config", w["bad_yaml"]],
                                ["malformed YAML", "training config"]),
    "train: config of wrong types": (lambda w: ["train", "--config", w["bad_config"],
                                                "--out", w["root"] / "t7"],
                                     ["config.yaml: iters: input should be a valid integer "
                                      "(got 'ten')"]),
    "train: config scale": (lambda w: ["train", "--config", w["bad_scale"], "--out",
                                       w["root"] / "t8"], ["scale.yaml: scale: input should "
                                                           "be a list (got 3)"]),
    "train: config not a mapping": (lambda w: ["train", "--config", w["list_yaml"]],
                                    ["a training config is a YAML mapping"]),
    # cycles
    "hierarchy show: cycle (node-link)": (lambda w: ["hierarchy", "show", w["cycle"]],
                                          ["cycle"]),
    "hierarchy tables: cycle (yaml)": (lambda w: ["hierarchy", "tables", w["cycle_yaml"],
                                                  "-o", w["root"] / "tables2"], ["cycle"]),
    "train: cycle": (lambda w: ["train", "--tree", w["cycle"], "--data",
                                f"cityscapes={w['city']}", "--out", w["root"] / "t9", *TRAIN],
                     ["cycle"]),
    # checkpoints
    "train --init-from: another tree": (lambda w: ["train", "--init-from", w["other_ckpt"],
                                                   "--data", f"cityscapes={w['city']}",
                                                   "--out", w["root"] / "t10", *TRAIN],
                                        ["another concept tree"]),
    "train --resume: another tree": (lambda w: ["train", "--resume", "--out",
                                                w["root"] / "other", "--iters", "2", "--tree",
                                                REPO / "hierarchies" / "dsspn-four-datasets.yaml"],
                                     ["another concept tree"]),
    **{f"{command}: {kind}": (
        (lambda command, kind: lambda w: (
            ["evaluate", w[kind]] if command == "evaluate" else
            ["predict", "--model", w[kind], w["root"] / "full.png", "--out", w["root"] / "p3"]
            if command == "predict" else
            ["export", w[kind], "-o", w["root"] / "x.onnx"] if command == "export" else
            ["train", "--init-from", w[kind], "--data", f"cityscapes={w['city']}", "--out",
             w["root"] / f"t-{kind}", *TRAIN] if command == "train --init-from" else
            ["train", "--backbone-weights", w[kind], "--data", f"cityscapes={w['city']}",
             "--out", w["root"] / f"b-{kind}", *TRAIN]))(command, kind),
        [w_name] if w_name else [])
        for command in ("evaluate", "predict", "export", "train --init-from",
                        "train --backbone-weights")
        for kind, w_name in (("text", "notes.pt"), ("noise", "noise.pt"),
                             ("tensor", "tensor.pt"), ("evil", "evil.pt"),
                             ("evil_zip", "evil-zip.pt"))},
    # option values
    "train: --batch-size 0": (lambda w: ["train", "--batch-size", "0"], ["--batch-size"]),
    "train: --crop 8": (lambda w: ["train", "--crop", "8"], ["--crop"]),
    "train: --device": (lambda w: ["train", "--device", "tpu9", "--data",
                                   f"cityscapes={w['city']}", "--out", w["root"] / "t11"],
                        ["--device tpu9"]),
    "train: --backbone": (lambda w: ["train", "--backbone", "resnet7", "--data",
                                     f"cityscapes={w['city']}", "--out", w["root"] / "t12"],
                          ["--backbone resnet7", "backbone: input should be 'resnet18'"]),
    "train: --output-stride": (lambda w: ["train", "--output-stride", "4", "--data",
                                          f"cityscapes={w['city']}", "--out",
                                          w["root"] / "t13"], ["output_stride"]),
    "train: --data format": (lambda w: ["train", "--data", "nuscenes=/x"], ["unknown format"]),
    "train: unknown option": (lambda w: ["train", "--learning-rate", "1"], ["no such option"]),
    "predict: --tile": (lambda w: ["predict", "--model", w["ckpt"],
                                   w["root"] / "full.png", "--tile",
                                   "5"], ["--tile 5"]),
    "predict: --dataset": (lambda w: ["predict", "--model", w["ckpt"], w["root"] / "full.png",
                                      "--dataset", "kitti", "--out", w["root"] / "p4"],
                           ["kitti"]),
    "export: --format": (lambda w: ["export", w["ckpt"], "--format", "tflite"], ["tflite"]),
    "export: --size": (lambda w: ["export", w["ckpt"], "--size", "big"], ["big"]),
    "evaluate: --split": (lambda w: ["evaluate", w["ckpt"], "--data",
                                     f"cityscapes={w['city']}", "--split", "holdout"],
                          ["holdout"]),
    "hierarchy show: --format": (lambda w: ["hierarchy", "show", "--format", "svg"],
                                 ["svg"]),
    "data sample: --size": (lambda w: ["data", "sample", w["root"] / "s", "--size", "1x"],
                            ["1x"]),
    "unknown command": (lambda w: ["trian"], ["no such command"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gives_one_line_and_exit_2(ws, run, case, monkeypatch):
    make_args, fragments = CASES[case]
    monkeypatch.chdir(ws["root"])
    result = run(*make_args(ws))
    expect_clean_error(result, *fragments)
    assert not (ws["root"] / MARKER).exists(), "a pickle ran code"


def test_a_pickle_carrying_code_is_named_as_such(ws, run):
    for kind in ("evil", "evil_zip"):
        result = run("evaluate", ws[kind])
        expect_clean_error(result, "carries code, which is not loaded")
    assert not (ws["root"] / MARKER).exists()


def test_the_check_commands_report_problems_in_a_table_with_exit_1(ws, run):
    """`hierarchy check` and `data check` exist to list problems: a tree with a cycle or a
    dataset with broken files is their normal input, reported as a table (exit 1)."""
    result = run("hierarchy", "check", ws["cycle"])
    assert result.exit_code == 1 and "no cycle" in result.stdout
    assert "a -> b -> a" in result.stdout or "b -> a -> b" in result.stdout
    result = run("data", "check", ws["corrupt"], "--format", "cityscapes")
    assert result.exit_code == 1 and "unreadable image" in result.stdout
    assert "Traceback" not in result.stderr + result.stdout
