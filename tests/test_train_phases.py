"""A run that starts from a checkpoint is built as the checkpoint was trained, unless told
otherwise; --iters 0 writes the starting weights and validates them. (The phases of a run,
``TrainingRun``, are covered by the training, fault and settings tests.)"""
import json

import pytest
import torch
import yaml

from dsspn_cli.data.sample import write_sample_data
from dsspn_cli.engine.checkpoint import load_checkpoint, load_model
from dsspn_cli.engine.config import SAMPLE_DATA_DEFAULTS, resolve_config
from dsspn_cli.engine.train import TrainConfig, train


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_sample_data(root, seed=0, images=4, size=(64, 128))
    return {"cityscapes": str(root / "cityscapes")}


@pytest.fixture(scope="module")
def old(data, tmp_path_factory):
    """A tiny trained model: resnet18 at output stride 16, a head of 8 hidden channels."""
    out = tmp_path_factory.mktemp("old") / "run"
    train(TrainConfig(data=data, out=str(out), iters=1, batch_size=2, crop=64,
                      backbone="resnet18", output_stride=16, head={"hidden": 8}, workers=0,
                      val_images=1, lr=0.01))
    return out / "checkpoints" / "last.pt"


def grown(data, old, out, *more):
    """``train --grow-from`` with no architecture option."""
    return ["train", "--grow-from", old, "--data", f"cityscapes={data['cityscapes']}",
            "--out", out, "--batch-size", "2", "--crop", "64", "--workers", "0",
            "--val-images", "1", "--device", "cpu", *more]


def one_error(result) -> str:
    assert result.exit_code == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and "Traceback" not in result.stderr
    assert len([line for line in lines if line.startswith("error: ")]) == 1
    return lines[-1]


def test_a_grown_model_takes_the_architecture_it_is_not_given(data, old, tmp_path, run):
    result = run(*grown(data, old, tmp_path / "new", "--iters", "1"))
    assert result.exit_code == 0, result.stderr
    assert (f"taken from {old}, as it was trained: backbone resnet18, output_stride 16, "
            "head.hidden 8") in result.stderr
    saved = yaml.safe_load((tmp_path / "new" / "config.yaml").read_text())
    assert (saved["backbone"], saved["output_stride"], saved["head"]["hidden"]) == (
        "resnet18", 16, 8)
    # Given and the same: nothing of it is said to be taken.
    result = run(*grown(data, old, tmp_path / "same", "--iters", "1", "--backbone",
                        "resnet18", "--set", "head.hidden=8"))
    assert result.exit_code == 0, result.stderr
    assert "as it was trained: output_stride 16\n" in result.stderr


@pytest.mark.parametrize("given,message", [
    (["--backbone", "resnet50"], "was trained with backbone resnet18, not resnet50; leave "
                                 "backbone out to take the checkpoint's"),
    (["--output-stride", "8"], "was trained with output_stride 16, not 8"),
    (["--set", "head.hidden=16"], "was trained with head.hidden 8, not 16; leave "
                                  "head.hidden out"),
    (["--head", "flat"], "was trained with head.type dsspn, not flat"),
])
def test_a_given_setting_that_differs_is_refused_in_one_line(data, old, tmp_path, run, given,
                                                             message):
    for start in ("--grow-from", "--init-from"):
        args = grown(data, old, tmp_path / "bad", "--iters", "1", *given)
        args[1] = start
        assert message in one_error(run(*args))
        assert not (tmp_path / "bad").exists()


def test_a_config_file_setting_is_given_too(data, old, tmp_path, run):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"head": {"hidden": 48}}))
    line = one_error(run(*grown(data, old, tmp_path / "bad", "--config", config)))
    assert "was trained with head.hidden 8, not 48" in line


def test_the_sample_data_defaults_leave_the_architecture_to_the_checkpoint():
    config, demo = resolve_config(None, {"grow_from": "old.pt"}, ["head.norm=none"])
    assert "backbone" not in demo and "output_stride" not in demo and "crop" in demo
    assert not {"backbone", "output_stride"} & config.model_fields_set
    assert config.head.model_fields_set == {"norm"}
    config, demo = resolve_config(None, {"iters": 1})
    assert config.backbone == demo["backbone"] == SAMPLE_DATA_DEFAULTS["backbone"]


def records(run_folder):
    return [json.loads(line) for line in (run_folder / "metrics.jsonl").read_text()
            .splitlines()]


def test_iters_0_writes_the_grown_start_and_validates_it(data, old, tmp_path, run):
    out = tmp_path / "zero"
    result = run(*grown(data, old, out, "--iters", "0"))
    assert result.exit_code == 0, result.stderr
    assert "done: step 0 (the starting weights, not trained)" in result.stderr
    start = load_checkpoint(out / "checkpoints" / "last.pt")
    assert start["step"] == 0 and (out / "checkpoints" / "best.pt").is_file()
    load_model(out / "checkpoints" / "last.pt")
    # The same tree: every neuron kept, so the start is the old model, all of it.
    before = load_checkpoint(old)["model"]
    assert start["model"].keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(start["model"][key], value), key
    logged = records(out)
    assert [r["step"] for r in logged] == [0, 0]
    assert "grown_from" in logged[0] and "val_mIoU" in logged[1]
    assert not any("loss" in r for r in logged)

    # Resumed as it is: already finished, its validation not logged twice.
    result = run("train", "--out", out, "--resume")
    assert result.exit_code == 0 and "already finished at step 0" in result.stderr
    assert records(out) == logged
    # Resumed with more steps: as a grown run trained straight.
    result = run("train", "--out", out, "--resume", "--iters", "2")
    assert result.exit_code == 0, result.stderr
    result = run(*grown(data, old, tmp_path / "straight", "--iters", "2"))
    assert result.exit_code == 0, result.stderr
    resumed = load_checkpoint(out / "checkpoints" / "last.pt")
    straight = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    assert resumed["step"] == straight["step"] == 2
    for key, value in straight["model"].items():
        assert torch.equal(resumed["model"][key], value), key
    losses = [r["loss"] for r in records(out) if "loss" in r]
    assert losses == [r["loss"] for r in records(tmp_path / "straight") if "loss" in r]


def test_epochs_0_is_iters_0(data, tmp_path):
    out = tmp_path / "fresh"
    result = train(TrainConfig(data=data, out=str(out), epochs=0, batch_size=2, crop=64,
                               backbone="resnet18", output_stride=16, head={"hidden": 8},
                               workers=0, val_images=1))
    assert result["step"] == 0 and "already_finished" not in result
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 0
    assert [r["step"] for r in records(out) if "val_mIoU" in r] == [0]
    assert TrainConfig(iters=0).iters == 0
    with pytest.raises(ValueError):
        TrainConfig(iters=-1)
