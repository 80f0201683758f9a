"""Training, resuming, evaluating: end to end on tiny sample data, on CPU."""
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO

from dsspn_cli.data.sample import write_sample_data
from dsspn_cli.engine.checkpoint import load_checkpoint, load_model
from dsspn_cli.engine.train import TrainConfig, train
from dsspn_cli.errors import UserError


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_sample_data(root, seed=0, images=4, size=(64, 128))
    return {"cityscapes": str(root / "cityscapes"), "ade": str(root / "ade20k")}


def config(data, out, **overrides):
    values = dict(data=data, out=str(out), iters=4, batch_size=2, crop=64, backbone="resnet18",
                  output_stride=16, workers=0, checkpoint_every=2, keep=2, val_images=1,
                  log_every=1, head={"hidden": 8}, lr=0.01)
    values.update(overrides)
    return TrainConfig(**values)


def test_run_folder_and_checkpoint(data, tmp_path):
    result = train(config(data, tmp_path / "run"))
    run = tmp_path / "run"
    assert result["step"] == 4
    for name in ("config.yaml", "metrics.jsonl", "curves.png", "checkpoints/last.pt",
                 "checkpoints/best.pt"):
        assert (run / name).is_file(), name
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*.pt")) == [
        "step-0000002.pt", "step-0000004.pt"]
    payload = load_checkpoint(run / "checkpoints" / "last.pt")     # weights_only=True
    assert payload["step"] == 4 and payload["config"]["backbone"] == "resnet18"
    assert {"model", "optimizer", "scheduler", "rng", "tree"} <= set(payload)
    model, table, tree, _ = load_model(run / "checkpoints" / "last.pt")
    assert len(table.concepts) == len(tree)
    records = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]
    assert any("val_mIoU" in r for r in records)


def test_resume_ends_with_the_same_weights(data, tmp_path):
    straight = train(config(data, tmp_path / "a"))
    train(config(data, tmp_path / "b"), stop_at=1)       # interrupted after step 1
    resumed = train(config(data, tmp_path / "b"), resume=True)
    assert straight["step"] == resumed["step"] == 4
    a = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(data, tmp_path):
    with pytest.raises(UserError, match="non-finite loss at step"):
        # lr 10, the largest the config accepts: the loss overflows within a few steps.
        train(config(data, tmp_path / "run", lr=10, iters=30, checkpoint_every=1))
    payload = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert all(torch.isfinite(v).all() for v in payload["model"].values()
               if v.is_floating_point())


def test_run_folder_rules(data, tmp_path):
    train(config(data, tmp_path / "run", iters=2))
    with pytest.raises(UserError, match="already holds a run; use --resume"):
        train(config(data, tmp_path / "run", iters=2))
    with pytest.raises(UserError, match="nothing to resume"):
        train(config(data, tmp_path / "other"), resume=True)


def test_evaluate_and_train_cli(data, tmp_path, run):
    result = run("train", "--data", f"cityscapes={data['cityscapes']}", "--out", tmp_path / "r",
                 "--iters", "2", "--batch-size", "2", "--crop", "64", "--backbone", "resnet18",
                 "--output-stride", "16", "--workers", "0", "--checkpoint-every", "2")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "r" / "config.yaml").is_file()
    out = tmp_path / "scores.json"
    result = run("evaluate", tmp_path / "r" / "checkpoints" / "last.pt", "--data",
                 f"cityscapes={data['cityscapes']}", "--json", out)
    assert result.exit_code == 0, result.stderr
    scores = json.loads(out.read_text())["cityscapes"]
    assert {"mIoU", "pixel_acc", "mean_acc", "per_class", "iou_per_level"} <= set(scores)
    assert len(scores["per_class"]) == 19 and "road" in scores["per_class"]


@pytest.mark.parametrize("args,message", [
    (["train", "--data", "nuscenes=/x"], "unknown format 'nuscenes'"),
    (["train", "--data", "cityscapes"], "write FORMAT=ROOT"),
    (["train", "--data", "cityscapes=/nowhere", "--out", "r"], "no such folder"),
    (["evaluate", "missing.pt"], "no such checkpoint"),
])
def test_bad_input(run, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = run(*args)
    assert result.exit_code == 2 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_config_file_and_overrides(data, tmp_path, run):
    import yaml

    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({"data": {"ade": data["ade"]}, "iters": 50,
                                    "batch_size": 2, "crop": 64, "backbone": "resnet18",
                                    "output_stride": 16, "workers": 0, "head": {"hidden": 8}}))
    result = run("train", "--config", path, "--iters", "1", "--out", tmp_path / "r")
    assert result.exit_code == 0, result.stderr
    saved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert saved["iters"] == 1 and saved["data"] == {"ade": data["ade"]}
    path.write_text("iters: 2\nbogus: 1\n")
    result = run("train", "--config", path, "--out", tmp_path / "s")
    assert result.exit_code == 2 and "unknown setting 'bogus'" in result.stderr


def test_two_ranks_keep_identical_weights(data, tmp_path):
    """torchrun with two CPU ranks (gloo): each activates other neurons; DDP must keep the
    weights of every neuron identical, which the loop checks and logs."""
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    out = tmp_path / "ddp"
    command = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "dsspn_cli", "train",
               "--data", f"cityscapes={data['cityscapes']}", "--data", f"ade={data['ade']}",
               "--out", str(out), "--iters", "3", "--batch-size", "1", "--crop", "64",
               "--backbone", "resnet18", "--output-stride", "16", "--workers", "0",
               "--checkpoint-every", "3", "--device", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"step": 3, "ranks_in_sync": True} in records
    assert (out / "checkpoints" / "last.pt").is_file()


def test_cityscapes_scores_equal_the_official_evaluator(data, tmp_path, run):
    """Our figures on Cityscapes predictions equal cityscapesScripts' on the same files."""
    from glob import glob

    evaluator = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")
    train(config(data, tmp_path / "run", iters=2))
    out, labels = tmp_path / "scores.json", tmp_path / "labels"
    result = run("evaluate", tmp_path / "run" / "checkpoints" / "last.pt", "--data",
                 f"cityscapes={data['cityscapes']}", "--json", out, "--labels-out", labels)
    assert result.exit_code == 0, result.stderr
    ours = json.loads(out.read_text())["cityscapes"]
    truth = sorted(glob(f"{data['cityscapes']}/gtFine/val/*/*_gtFine_labelIds.png"))
    predictions = [str(labels / "cityscapes" / (os.path.basename(t).replace(
        "_gtFine_labelIds.png", "_labelIds.png"))) for t in truth]
    args = evaluator.args
    args.evalInstLevelScore, args.JSONOutput, args.quiet = False, False, True
    official = evaluator.evaluateImgLists(predictions, truth, args)
    assert ours["mIoU"] == pytest.approx(100 * official["averageScoreClasses"], abs=1e-9)
    nan = lambda s: s == "nan" or s != s                         # noqa: E731
    compared = 0
    for name, score in official["classScores"].items():
        if name not in ours["per_class"]:                       # the 16 ignored classes
            assert nan(score), name
            continue
        mine = ours["per_class"][name]["iou"]
        if nan(score):
            assert mine is None, name
        else:
            assert mine == pytest.approx(100 * score, abs=1e-9), name
            compared += 1
    assert compared >= 5


def test_universal_schedule_fine_tunes_each_dataset(data, tmp_path):
    result = train(config(data, tmp_path / "run", iters=2, finetune=2))
    assert set(result["finetuned"]) == {"cityscapes", "ade"}
    for fmt in ("cityscapes", "ade"):
        payload = load_checkpoint(tmp_path / "run" / f"finetune-{fmt}" / "checkpoints" /
                                  "last.pt")
        assert payload["step"] == 2 and payload["config"]["lr"] == pytest.approx(0.001)
        assert list(payload["config"]["data"]) == [fmt]


def test_cli_resume_continues_the_run_with_its_saved_settings(data, tmp_path, run):
    common = ["--out", tmp_path / "r", "--batch-size", "2", "--crop", "64", "--backbone",
              "resnet18", "--output-stride", "16", "--workers", "0", "--checkpoint-every", "1"]
    first = run("train", "--data", f"ade={data['ade']}", "--iters", "2", *common)
    assert first.exit_code == 0, first.stderr
    again = run("train", "--resume", "--out", tmp_path / "r", "--iters", "3")
    assert again.exit_code == 0, again.stderr
    assert load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")["step"] == 3


def test_a_failed_resume_changes_nothing_on_disk(data, tmp_path, run):
    """Resuming with a setting the weights depend on (another backbone) is refused before any
    file is touched, so the run can still be resumed as it was."""
    train(config(data, tmp_path / "run", iters=2))
    run_folder = tmp_path / "run"
    before = {p: p.read_bytes() for p in sorted(run_folder.rglob("*")) if p.is_file()}
    result = run("train", "--resume", "--out", run_folder, "--backbone", "resnet50",
                 "--iters", "3")
    assert result.exit_code == 2 and "was trained with backbone resnet18" in result.stderr
    after = {p: p.read_bytes() for p in sorted(run_folder.rglob("*")) if p.is_file()}
    assert after == before
    again = run("train", "--resume", "--out", run_folder, "--iters", "3")
    assert again.exit_code == 0, again.stderr


def test_the_flat_baseline_trains_evaluates_and_predicts_through_the_cli(data, tmp_path, run):
    """--head flat: the same loop, data and backbone; its checkpoint loads through the one
    model factory and evaluates and predicts like a DSSPN's."""
    result = run("train", "--head", "flat", "--data", f"cityscapes={data['cityscapes']}",
                 "--data", f"ade={data['ade']}", "--out", tmp_path / "flat", "--iters", "2",
                 "--batch-size", "2", "--crop", "64", "--backbone", "resnet18",
                 "--output-stride", "16", "--workers", "0", "--checkpoint-every", "2")
    assert result.exit_code == 0, result.stderr
    checkpoint = tmp_path / "flat" / "checkpoints" / "last.pt"
    model, table, _, saved = load_model(checkpoint)
    assert saved.head.type == "flat" and type(model.head).__name__ == "FlatHead"
    assert not any(k.startswith("head.neurons") for k in model.state_dict())
    scores = tmp_path / "scores.json"
    result = run("evaluate", checkpoint, "--data", f"cityscapes={data['cityscapes']}",
                 "--json", scores)
    assert result.exit_code == 0, result.stderr
    assert len(json.loads(scores.read_text())["cityscapes"]["per_class"]) == 19
    images = f"{data['cityscapes']}/leftImg8bit/val"
    result = run("predict", "--model", checkpoint, images, "--dataset", "cityscapes", "--out",
                 tmp_path / "pred")
    assert result.exit_code == 0, result.stderr
    assert list((tmp_path / "pred").rglob("*_labels.png"))


def test_validation_uses_the_same_images_spread_over_the_split(data):
    from dsspn_cli.engine.train import spread, validation_sets
    from dsspn_cli.hierarchy.tables import MaskingTable
    from dsspn_cli.hierarchy.tree import load_tree

    assert spread(10, 3) == [0, 3, 6] and spread(4, 10) == [0, 1, 2, 3]
    assert spread(2000, 500)[:3] == [0, 4, 8] and len(set(spread(2000, 500))) == 500
    table = MaskingTable.from_tree(load_tree())
    full = validation_sets(config(data, "unused", val_images=0), table)
    cut = validation_sets(config(data, "unused", val_images=1), table)
    assert [len(d) for d in full] == [2, 2] and [len(d) for d in cut] == [1, 1]
    assert [d.samples[0] for d in cut] == [d.samples[0] for d in full]
    assert TrainConfig().val_images == 500 and TrainConfig().val_every == 5000


def test_buffers_are_broadcast_only_when_training_changes_them(tmp_path):
    """DistributedDataParallel broadcasts buffers only for batch norm trained from scratch
    (its running statistics); frozen batch norm and the tree's tables never change."""
    from dsspn_cli.engine.train import has_running_stats
    from dsspn_cli.hierarchy.tables import MaskingTable
    from dsspn_cli.hierarchy.tree import load_tree
    from dsspn_cli.model.backbone import resnet18
    from dsspn_cli.model.segmenter import build_model

    weights = tmp_path / "resnet18.pth"
    torch.save(resnet18().state_dict(), weights)
    table = MaskingTable.from_tree(load_tree())
    small = dict(backbone="resnet18", output_stride=16)
    assert has_running_stats(build_model(table, TrainConfig(**small)))
    frozen = TrainConfig(**small, backbone_weights=str(weights))
    assert not has_running_stats(build_model(table, frozen))
    assert has_running_stats(build_model(table, frozen.replace(head={"norm": "batch"})))


def test_grow_a_trained_model_onto_a_tree_merged_onto_its_own(data, tmp_path, run):
    """The paper's 'updating and extending' from the command line: a model trained on the
    shipped tree, a new label set merged onto that tree without moving a concept, and
    training on the new tree from the old checkpoint: every old neuron is kept or extended,
    with its weights."""
    train(config(data, tmp_path / "old", iters=1))
    old_checkpoint = tmp_path / "old" / "checkpoints" / "last.pt"
    pets = tmp_path / "pets.yaml"
    pets.write_text("name: pets\nignore_index: 255\nlabels:\n"
                    "- {id: 0, name: kitten, synset: kitten.n.01}\n"
                    "- {id: 1, name: hamster, synset: hamster.n.01}\n"
                    "- {id: 2, name: car, synset: car.n.01}\n")
    from dsspn_cli.resources import default_tree_path

    grown_tree = tmp_path / "grown.yaml"
    result = run("hierarchy", "merge", "--onto", default_tree_path(), pets, "-o", grown_tree)
    assert result.exit_code == 0, result.stderr
    args = ["train", "--grow-from", old_checkpoint, "--tree", grown_tree, "--data",
            f"cityscapes={data['cityscapes']}", "--out", tmp_path / "new", "--iters", "1",
            "--batch-size", "2", "--crop", "64", "--backbone", "resnet18", "--output-stride",
            "16", "--workers", "0", "--set", "head.hidden=8", "--checkpoint-every", "1"]
    result = run(*args)
    assert result.exit_code == 0, result.stderr
    record = next(json.loads(line) for line in (tmp_path / "new" / "metrics.jsonl")
                  .read_text().splitlines() if "grown_from" in line)
    old_model, old_table, _, _ = load_model(old_checkpoint)
    assert len(record["neurons_kept"]) + len(record["neurons_extended"]) == len(
        old_table.neuron_concept)
    assert "grown from" in result.stderr and "neurons kept" in result.stderr
    # Training on the grown tree with another backbone than the checkpoint's is refused.
    bad = [a if a != "resnet18" else "resnet50" for a in args]
    bad[bad.index(tmp_path / "new")] = tmp_path / "bad"
    result = run(*bad)
    assert result.exit_code == 2 and "was trained with backbone resnet18" in result.stderr
    assert not (tmp_path / "bad").exists()
