"""Lose nothing: no command overwrites what it reads, writes through a link or blocks on a
special file among its outputs, or overwrites a checkpoint by its advice or its defaults.

Fixed at the mechanism (``files.check_output`` knows every path a command reads and every
path it writes; ``files`` opens them without following links), so each case below runs the
real command on the real thing: a tree given with --onto and as -o, a dataset image named as
--json, a config file inside the run folder, links planted among a run's files, a FIFO as
metrics.jsonl, a run whose last.pt is gone.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, expect_error
from PIL import Image

from dsspn_cli.data.sample import write_sample_data
from dsspn_cli.engine.checkpoint import load_checkpoint, save_checkpoint
from dsspn_cli.engine.config import TrainConfig
from dsspn_cli.engine.train import train
from dsspn_cli.errors import UserError
from dsspn_cli.files import (
    append_text,
    atomic_write_bytes,
    check_output,
    link_into_place,
)

ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
TREE = REPO / "hierarchies" / "dsspn-four-datasets.yaml"




def snapshot(folder):
    """Every file below ``folder`` (links as links) and its bytes."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            found[path] = ("link", os.readlink(path))
        elif path.is_file():
            found[path] = path.read_bytes()
        elif path.is_fifo():
            found[path] = "fifo"
    return found


def settings(city, out, **overrides):
    values = dict(data={"cityscapes": str(city)}, out=str(out), iters=4, batch_size=1, crop=32,
                  backbone="resnet18", output_stride=16, workers=0, checkpoint_every=2, keep=3,
                  val_every=100, val_images=1, log_every=1, head={"hidden": 8}, device="cpu")
    values.update(overrides)
    return values


def cli_args(city, out, iters=4):
    return ["train", "--data", f"cityscapes={city}", "--out", out, "--iters", str(iters),
            "--batch-size", "1", "--crop", "32", "--backbone", "resnet18", "--output-stride",
            "16", "--workers", "0", "--checkpoint-every", "2", "--keep", "3", "--val-every",
            "100", "--val-images", "1", "--log-every", "1", "--set", "head.hidden=8",
            "--device", "cpu"]


def loss_steps(run):
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in records if "loss" in r]


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Sample Cityscapes data, an untrained checkpoint, loose images in a city sub-folder,
    and a finished 4-step run (step-2, step-4, last.pt, best.pt)."""
    root = tmp_path_factory.mktemp("lose-nothing")
    write_sample_data(root / "data", seed=0, images=2, size=(64, 128))
    city = root / "data" / "cityscapes"
    from dsspn_cli.hierarchy.tables import MaskingTable
    from dsspn_cli.hierarchy.tree import load_tree
    from dsspn_cli.model.segmenter import build_model

    torch.manual_seed(0)
    tree = load_tree()
    config = TrainConfig(backbone="resnet18", output_stride=16, head={"hidden": 8})
    ckpt = root / "model.pt"
    save_checkpoint(ckpt, model=build_model(MaskingTable.from_tree(tree), config), tree=tree,
                    config=config.to_dict(), step=0, epoch=0)
    images = root / "images"
    (images / "frankfurt").mkdir(parents=True)
    Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(images / "frankfurt" / "a.png")
    run = root / "run"
    train(TrainConfig(**settings(city, run)))
    return {"root": root, "city": city, "ckpt": ckpt, "images": images, "run": run}


@pytest.fixture
def victim(tmp_path):
    """A folder of someone else's that a write through a link would land in."""
    folder = tmp_path / "victim"
    folder.mkdir()
    (folder / "keep.txt").write_text("keep me")
    return folder


def copy_run(ws, tmp_path, name="run"):
    # Hard links kept as they are (last.pt and best.pt share their step file's bytes).
    out = tmp_path / name
    shutil.copytree(ws["run"], out)
    return out


# ------------------------------------------------------------------------ inputs overwritten


def test_merge_refuses_to_overwrite_the_tree_given_with_onto(tmp_path, run):
    tree = tmp_path / "tree.yaml"
    shutil.copy(TREE, tree)
    before = tree.read_bytes()
    expect_error(run("hierarchy", "merge", "cityscapes", "--onto", tree, "-o", tree),
                 "tree.yaml: is also an input of this command")
    os.link(tree, tmp_path / "same.yaml")                     # the same file by another name
    expect_error(run("hierarchy", "merge", "cityscapes", "--onto", tree,
                     "-o", tmp_path / "same.yaml"), "is also an input")
    assert tree.read_bytes() == before


def test_evaluate_refuses_json_that_is_one_of_the_datasets_images(ws, run):
    image = sorted((ws["city"] / "leftImg8bit" / "val").rglob("*.png"))[0]
    before = image.read_bytes()
    line = expect_error(run("evaluate", ws["ckpt"], "--data", f"cityscapes={ws['city']}",
                            "--json", image), "lies inside", "an input of this command")
    assert str(ws["city"]) in line
    assert image.read_bytes() == before


def test_evaluate_refuses_json_that_is_its_checkpoint_by_another_name(ws, run, tmp_path):
    os.link(ws["ckpt"], tmp_path / "scores.json")
    expect_error(run("evaluate", ws["ckpt"], "--data", f"cityscapes={ws['city']}",
                     "--json", tmp_path / "scores.json"), "is also an input")


def test_labels_out_may_not_lie_inside_nor_hold_a_dataset_root(ws, run):
    before = snapshot(ws["city"])
    expect_error(run("evaluate", ws["ckpt"], "--data", f"cityscapes={ws['city']}",
                     "--labels-out", ws["city"] / "predictions"), "lies inside")
    expect_error(run("evaluate", ws["ckpt"], "--data", f"cityscapes={ws['city']}",
                     "--labels-out", ws["city"].parent), "holds", "move the input out")
    assert snapshot(ws["city"]) == before
    assert not (ws["city"] / "predictions").exists()


def test_train_refuses_to_replace_the_users_own_config_file(ws, run, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    config = out / "config.yaml"
    config.write_text("# my settings, with comments\niters: 2\ncrop: 32\n")
    before = config.read_bytes()
    line = expect_error(run("train", "--config", config, "--out", out, "--data",
                            f"cityscapes={ws['city']}"),
                        "config.yaml: is also an input of this command", "give another output")
    assert str(config) in line
    assert config.read_bytes() == before and os.listdir(out) == ["config.yaml"]
    other = out / "mine.yaml"              # any config file inside the run folder
    shutil.copy(config, other)
    expect_error(run("train", "--config", other, "--out", out, "--data",
                     f"cityscapes={ws['city']}"), "holds", "mine.yaml")


@pytest.mark.parametrize("where", ["parent", "inside", "same"])
def test_a_run_folder_may_not_hold_lie_inside_or_be_a_dataset_root(ws, run, where):
    out = {"parent": ws["city"].parent, "inside": ws["city"] / "run",
           "same": ws["city"]}[where]
    fragment = {"parent": "holds", "inside": "lies inside", "same": "is also an input"}[where]
    before = snapshot(ws["city"])
    expect_error(run(*cli_args(ws["city"], out)), fragment, str(ws["city"]))
    assert snapshot(ws["city"]) == before


def test_a_run_folder_may_not_hold_the_checkpoint_it_starts_from(ws, run, tmp_path):
    out = tmp_path / "stage"
    (out / "start").mkdir(parents=True)
    shutil.copy(ws["ckpt"], out / "start" / "model.pt")
    expect_error(run(*cli_args(ws["city"], out), "--init-from", out / "start" / "model.pt"),
                 "holds", "model.pt")
    assert sorted(os.listdir(out)) == ["start"]


def test_predict_into_the_folder_of_its_images_says_the_output_is_an_input(ws, run):
    images = ws["images"]
    before = snapshot(images)
    expect_error(run("predict", "--model", ws["ckpt"], images, "--out", images),
                 f"{images}: is also an input of this command")
    expect_error(run("predict", "--model", ws["ckpt"], images, "--out", images / "out"),
                 "lies inside")
    assert snapshot(images) == before


def test_predict_sees_through_a_link_to_its_input_folder(ws, run, tmp_path):
    (tmp_path / "out").symlink_to(ws["images"])
    before = snapshot(ws["images"])
    expect_error(run("predict", "--model", ws["ckpt"], ws["images"], "--out",
                     tmp_path / "out"), "is also an input")
    assert snapshot(ws["images"]) == before


def test_tables_refuse_a_folder_holding_their_tree(run, tmp_path):
    shutil.copy(TREE, tmp_path / "tree.yaml")
    expect_error(run("hierarchy", "tables", tmp_path / "tree.yaml", "-o", tmp_path), "holds")
    assert os.listdir(tmp_path) == ["tree.yaml"]


# ------------------------------------------------------------------- links and special files


def test_predict_never_writes_through_a_linked_sub_folder(ws, run, tmp_path, victim):
    out = tmp_path / "out"
    out.mkdir()
    (out / "frankfurt").symlink_to(victim)
    expect_error(run("predict", "--model", ws["ckpt"], ws["images"], "--out", out),
                 "frankfurt: is a symbolic link")
    assert os.listdir(victim) == ["keep.txt"]


def test_evaluate_never_writes_labels_through_a_linked_dataset_folder(ws, run, tmp_path,
                                                                     victim):
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "cityscapes").symlink_to(victim)
    expect_error(run("evaluate", ws["ckpt"], "--data", f"cityscapes={ws['city']}",
                     "--labels-out", labels), "cityscapes: is a symbolic link")
    assert os.listdir(victim) == ["keep.txt"]


def test_evaluate_checks_each_label_file_before_the_work(ws, run, tmp_path, victim):
    labels = tmp_path / "labels"
    (labels / "cityscapes").mkdir(parents=True)
    key = sorted((ws["city"] / "gtFine" / "val").rglob("*_labelIds.png"))[0].name
    planted = labels / "cityscapes" / key.replace("_gtFine_labelIds", "_labelIds")
    planted.symlink_to(victim / "keep.txt")
    expect_error(run("evaluate", ws["ckpt"], "--data", f"cityscapes={ws['city']}",
                     "--labels-out", labels), "is a symbolic link")
    assert os.listdir(labels / "cityscapes") == [planted.name]
    assert (victim / "keep.txt").read_text() == "keep me"


# Links and special files planted in a fresh run folder: each is refused before the work,
# before config.yaml is written.
PLANTED = {
    "metrics.jsonl as a link": ("metrics.jsonl", "link"),
    "curves.png as a link": ("curves.png", "link"),
    "config.yaml as a link": ("config.yaml", "link"),
    "data-scan.json as a FIFO": ("data-scan.json", "fifo"),
    "checkpoints/ as a link": ("checkpoints", "folder link"),
    "a step file as a link": ("checkpoints/step-0000002.pt", "link"),
    "best.pt as a link": ("checkpoints/best.pt", "link"),
    "tensorboard/ as a link": ("tensorboard", "folder link"),
    "a fine-tuning stage as a link": ("finetune-cityscapes", "folder link"),
    "a fine-tuning stage's metrics as a FIFO": ("finetune-cityscapes/metrics.jsonl", "fifo"),
    "checkpoints as a file": ("checkpoints", "file"),
}


@pytest.mark.parametrize("case", list(PLANTED))
def test_a_link_or_special_file_planted_in_a_run_folder_is_refused_before_the_work(
        ws, run, tmp_path, victim, case):
    name, kind = PLANTED[case]
    out = tmp_path / "run"
    planted = out / name
    planted.parent.mkdir(parents=True)
    if kind == "link":
        planted.symlink_to(victim / "keep.txt")
    elif kind == "folder link":
        planted.symlink_to(victim)
    elif kind == "fifo":
        os.mkfifo(planted)
    else:
        planted.write_text("")
    fragment = {"link": "is a symbolic link", "folder link": "is a symbolic link",
                "fifo": "is a FIFO", "file": "is a file, where this command writes a folder"}
    expect_error(run(*cli_args(ws["city"], out)), fragment[kind], name)
    assert not (out / "config.yaml").exists() or name == "config.yaml"
    assert sorted(os.listdir(victim)) == ["keep.txt"]
    assert (victim / "keep.txt").read_text() == "keep me"


def test_a_fifo_as_metrics_jsonl_never_blocks_training(ws, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    os.mkfifo(out / "metrics.jsonl")
    args = [str(a) for a in cli_args(ws["city"], out)]
    proc = subprocess.run([sys.executable, "-m", "dsspn_cli", *args], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "metrics.jsonl: is a FIFO" in proc.stderr.splitlines()[-1]
    assert sorted(os.listdir(out)) == ["metrics.jsonl"]


def test_a_trailing_slash_names_a_folder_and_a_file_output_refuses_it(ws, run, tmp_path):
    new = f"{tmp_path / 'newdir'}/"
    for args in (["hierarchy", "show", "--format", "yaml", "-o", new],
                 ["hierarchy", "merge", "cityscapes", "-o", new],
                 ["evaluate", ws["ckpt"], "--data", f"cityscapes={ws['city']}", "--json", new],
                 ["export", ws["ckpt"], "-o", new]):
        expect_error(run(*args), "newdir/: ends with '/', which names a folder")
    assert not (tmp_path / "newdir").exists()
    with pytest.raises(UserError, match="names a folder"):
        check_output(new)
    assert check_output(new, folder=True) == tmp_path / "newdir"     # a folder: fine


def test_writes_open_no_link_below_the_folder_named_even_one_planted_after_the_check(
        tmp_path, victim):
    out = tmp_path / "out"
    out.mkdir()
    check_output(out, folder=True, writes=["city/a.png"])      # nothing there yet: fine
    (out / "city").symlink_to(victim)                          # then a link appears
    with pytest.raises(UserError, match="city: is a symbolic link"):
        atomic_write_bytes(out / "city" / "a.png", b"x", within=out)
    with pytest.raises(UserError, match="city: is a symbolic link"):
        append_text(out / "city" / "log.jsonl", "x\n", within=out)
    assert sorted(os.listdir(victim)) == ["keep.txt"]
    (out / "last.pt").symlink_to(victim / "keep.txt")
    (out / "step.pt").write_bytes(b"checkpoint")
    with pytest.raises(UserError, match="last.pt: is a symbolic link"):
        link_into_place(out / "step.pt", out / "last.pt", within=out)
    assert (victim / "keep.txt").read_text() == "keep me"
    link_into_place(out / "step.pt", out / "best.pt", within=out)
    assert (out / "best.pt").read_bytes() == b"checkpoint"
    assert not list(out.glob(".*.tmp"))


def test_appending_to_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "metrics.jsonl"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)     # even with a reader there
    try:
        with pytest.raises(UserError, match="is a FIFO"):
            append_text(fifo, "x\n")
        assert os.read(reader, 10) == b""
    finally:
        os.close(reader)


# ------------------------------------------------------------------------------ resuming


def test_resume_without_last_pt_continues_from_the_newest_step_file(ws, run, tmp_path):
    out = copy_run(ws, tmp_path)
    (out / "checkpoints" / "last.pt").unlink()
    result = run(*cli_args(ws["city"], out, iters=6), "--resume")
    assert result.exit_code == 0, result.stderr
    assert "resuming from" in result.stderr and "step-0000004.pt" in result.stderr
    assert "last.pt: missing" in result.stderr
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 6
    assert loss_steps(out) == [1, 2, 3, 4, 5, 6]              # one history


def test_resume_passes_over_a_damaged_step_file_and_says_so(ws, run, tmp_path):
    out = copy_run(ws, tmp_path)
    (out / "checkpoints" / "last.pt").unlink()
    newest = out / "checkpoints" / "step-0000004.pt"
    newest.unlink()                        # a new file: best.pt shares the old one's bytes
    newest.write_bytes(b"not a checkpoint")
    result = run(*cli_args(ws["city"], out), "--resume")
    assert result.exit_code == 0, result.stderr
    said = [line for line in result.stderr.splitlines() if "resuming from" in line]
    assert len(said) == 1 and "step-0000002.pt" in said[0]
    assert "passed over step-0000004.pt: not a dsspn checkpoint" in said[0]
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 4
    assert loss_steps(out) == [1, 2, 3, 4]


def test_resume_with_no_loadable_checkpoint_changes_nothing(ws, run, tmp_path):
    out = copy_run(ws, tmp_path)
    (out / "checkpoints" / "last.pt").unlink()
    (out / "checkpoints" / "best.pt").unlink()
    for step in (2, 4):
        path = out / "checkpoints" / f"step-000000{step}.pt"
        path.unlink()
        path.write_bytes(b"damaged")
    before = snapshot(out)
    expect_error(run(*cli_args(ws["city"], out), "--resume"),
                 "no checkpoint here loads", "step-0000004.pt", "another --out")
    assert snapshot(out) == before


def test_a_new_run_is_refused_where_step_files_remain(ws, run, tmp_path):
    out = copy_run(ws, tmp_path)
    (out / "checkpoints" / "last.pt").unlink()
    before = snapshot(out)
    expect_error(run(*cli_args(ws["city"], out)),
                 "already holds a run; use --resume to continue it or another --out",
                 "step-0000004.pt")
    assert snapshot(out) == before


def test_a_run_stopped_before_its_first_checkpoint(ws, run, tmp_path):
    """Metrics logged, no checkpoint yet: a new run there is refused (it would add a second
    history); --resume starts it over, with one history."""
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(ws["run"] / "metrics.jsonl", out / "metrics.jsonl")
    expect_error(run(*cli_args(ws["city"], out)), "already holds a run; use --resume",
                 "metrics.jsonl")
    result = run(*cli_args(ws["city"], out), "--resume")
    assert result.exit_code == 0, result.stderr
    assert "no checkpoint written yet: the run starts over" in result.stderr
    assert loss_steps(out) == [1, 2, 3, 4]


def test_nothing_to_resume_only_where_a_new_run_may_start(ws, run, tmp_path):
    out = tmp_path / "empty"
    expect_error(run(*cli_args(ws["city"], out), "--resume"),
                 "nothing to resume; start without --resume")
    result = run(*cli_args(ws["city"], out))                  # and that advice works
    assert result.exit_code == 0, result.stderr


def test_resuming_a_finished_run_says_so_and_touches_no_checkpoint(ws, run, tmp_path):
    out = copy_run(ws, tmp_path)
    checkpoints = snapshot(out / "checkpoints")
    for extra in ([], ["--config", out / "config.yaml"]):      # its own config: not an input
        result = run("train", "--out", out, "--resume", *extra)
        assert result.exit_code == 0, result.stderr
        assert "already finished at step 4" in result.stderr, result.stderr
        assert "None" not in result.stderr and "nan" not in result.stderr
    assert snapshot(out / "checkpoints") == checkpoints
    assert loss_steps(out) == [1, 2, 3, 4]
