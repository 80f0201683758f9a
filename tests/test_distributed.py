"""Several processes under torchrun (two CPU ranks, gloo): evaluation sharded over the ranks
gives exactly the single-process scores, and validation during training does not starve the
process-group timeout."""
import json
import math
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import REPO
from PIL import Image

from dsspn_cli.data.sample import write_sample_data
from dsspn_cli.engine.checkpoint import save_checkpoint
from dsspn_cli.engine.config import TrainConfig
from dsspn_cli.hierarchy.tables import MaskingTable
from dsspn_cli.hierarchy.tree import load_tree
from dsspn_cli.model.segmenter import build_model

ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
TORCHRUN = [os.path.join(os.path.dirname(sys.executable), "torchrun"), "--standalone",
            "--nproc_per_node", "2", "-m", "dsspn_cli"]
SMALL = dict(backbone="resnet18", output_stride=16, head={"hidden": 8})


def dsspn(*args, ranks: int = 1, timeout: int = 300) -> subprocess.CompletedProcess:
    command = (TORCHRUN if ranks == 2 else [sys.executable, "-m", "dsspn_cli"]) + [
        str(a) for a in args]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=ENV,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_sample_data(root, seed=0, images=12, size=(64, 128))      # 3 val images each
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    tree = load_tree()
    config = TrainConfig(**SMALL)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, model=build_model(MaskingTable.from_tree(tree), config), tree=tree,
                    config=config.to_dict(), step=0, epoch=0)
    return path


def test_evaluate_under_torchrun_equals_one_process(data, checkpoint, tmp_path):
    """Each rank scores its share (2 and 1 of 3 images) and the counts are summed exactly:
    every figure of the JSON, pixel counts included, equals the single process's."""
    sets = ["--data", f"cityscapes={data / 'cityscapes'}", "--data", f"ade={data / 'ade20k'}"]
    common = [*sets, "--device", "cpu", "--workers", "0", "--tile", "64"]
    dsspn("evaluate", checkpoint, *common, "--json", tmp_path / "one.json")
    two = dsspn("evaluate", checkpoint, *common, "--json", tmp_path / "two.json", ranks=2)
    one = json.loads((tmp_path / "one.json").read_text())
    assert json.loads((tmp_path / "two.json").read_text()) == one
    assert one["cityscapes"]["images"] == one["ade"]["images"] == 3
    labelled = sum(row["pixels"] for row in one["cityscapes"]["per_class"].values())
    assert 0 < labelled <= 3 * 64 * 128
    assert two.stdout.count("cityscapes") == 1          # rank 0 alone reports


def _seconds_per_image(image: np.ndarray) -> float:
    """What validating one such image takes here, with this model, on one thread."""
    from dsspn_cli.engine.infer import Inference

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        table = MaskingTable.from_tree(load_tree())
        model = build_model(table, TrainConfig(**SMALL)).eval()
        infer = Inference(model, "cityscapes")
        infer(torch.from_numpy(image))                  # warm-up
        started = time.perf_counter()
        infer(torch.from_numpy(image))
        return time.perf_counter() - started
    finally:
        torch.set_num_threads(threads)


def test_validation_longer_than_the_timeout_still_finishes(data, tmp_path):
    """Two ranks, a process-group timeout of a few seconds and a validation set that takes
    each rank longer than that: the ranks validate their shares side by side and meet in the
    same all-reduce, so nobody waits out the timeout; the run ends in sync. (Validating on
    rank 0 alone, as before, left rank 1 in the next step's collective for the whole of it.)"""
    timeout_s = 5.0
    root = tmp_path / "cityscapes"
    shutil.copytree(data / "cityscapes", root)
    # The validation split: copies of one image, enlarged, as many as the time asks.
    [image_file] = sorted((root / "leftImg8bit" / "val").rglob("*_leftImg8bit.png"))[:1]
    label_file = next((root / "gtFine" / "val").rglob(image_file.name.replace(
        "_leftImg8bit.png", "_gtFine_labelIds.png")))
    size = (768, 384)
    image = Image.open(image_file).convert("RGB").resize(size, Image.BILINEAR)
    label = Image.open(label_file).resize(size, Image.NEAREST)
    per_image = _seconds_per_image(np.array(image))
    copies = min(80, max(4, math.ceil(2 * 1.4 * timeout_s / per_image)))   # 1.4x, per rank
    shutil.rmtree(root / "leftImg8bit" / "val")
    shutil.rmtree(root / "gtFine" / "val")
    (root / "leftImg8bit" / "val" / "lindau").mkdir(parents=True)
    (root / "gtFine" / "val" / "lindau").mkdir(parents=True)
    image.save(root / "leftImg8bit" / "val" / "lindau" / "lindau_000000_000019_leftImg8bit.png")
    label.save(root / "gtFine" / "val" / "lindau" / "lindau_000000_000019_gtFine_labelIds.png")
    for i in range(1, copies):
        for folder, tail in (("leftImg8bit", "leftImg8bit"), ("gtFine", "gtFine_labelIds")):
            os.link(root / folder / "val" / "lindau" / f"lindau_000000_000019_{tail}.png",
                    root / folder / "val" / "lindau" / f"lindau_{i:06d}_000019_{tail}.png")
    out = tmp_path / "run"
    dsspn("train", "--data", f"cityscapes={root}", "--out", out, "--iters", "2",
          "--batch-size", "2", "--crop", "64", "--backbone", "resnet18", "--output-stride",
          "16", "--workers", "0", "--checkpoint-every", "100", "--device", "cpu",
          "--set", "head.hidden=8", "--dist-timeout", str(timeout_s / 60), ranks=2)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    [validation] = [r for r in records if "val_mIoU" in r]
    assert validation["val"]["cityscapes"]["images"] == copies
    assert validation["val_seconds"] > timeout_s, (
        f"validation took {validation['val_seconds']} s, not longer than the {timeout_s} s "
        f"timeout ({copies} images at {per_image:.3f} s): the test proves nothing")
    assert {"step": 2, "ranks_in_sync": True} in records
