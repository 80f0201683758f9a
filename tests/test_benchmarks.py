"""benchmarks/gpu.py cannot run its figures here (no GPU): it refuses cleanly without CUDA,
and its measurements run, tiny, on the CPU."""
import argparse
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO

from dsspn_cli.hierarchy.tables import MaskingTable
from dsspn_cli.hierarchy.tree import load_tree


@pytest.fixture(scope="module")
def gpu_benchmark():
    spec = importlib.util.spec_from_file_location("gpu_benchmark", REPO / "benchmarks" /
                                                  "gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here")
def test_without_cuda_it_says_so_and_exits_2():
    proc = subprocess.run([sys.executable, "benchmarks/gpu.py"], capture_output=True,
                          text=True, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"),
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("benchmarks/gpu.py: no CUDA device here")
    assert "Traceback" not in proc.stderr


def test_each_measurement_runs_and_a_failure_is_recorded(gpu_benchmark):
    cpu = torch.device("cpu")
    args = argparse.Namespace(backbone="resnet18", quick=True, size=(64, 96), crop=33,
                              batches=[1], images=1, steps=1, warmup=0, seconds=1.0)
    table = MaskingTable.from_tree(load_tree())
    results = {"device": "cpu", "torch": torch.__version__, "seconds": 1.0,
               "settings": {"backbone": "resnet18", "size": [64, 96], "precisions": ["bf16"]},
               "inference": {}, "training": {}}
    for head in ("dsspn", "flat"):
        gpu_benchmark.measured("inference", results["inference"], f"{head} bf16",
                               gpu_benchmark.inference, table, head, "bf16", args, cpu)
    gpu_benchmark.measured("training", results["training"], "dsspn bf16",
                           gpu_benchmark.training, table, "dsspn", "bf16", args, cpu)
    gpu_benchmark.measured("training", results["training"], "dsspn fp16",
                           gpu_benchmark.training, table, "dsspn", "fp16", args, cpu)
    assert results["inference"]["dsspn bf16"]["images_per_s"] > 0
    assert results["inference"]["flat bf16"]["peak_bytes"] is None          # CPU: no peak
    assert results["training"]["dsspn bf16"]["batch"] == 1
    assert "float16 autocast needs a CUDA device" in results["training"]["dsspn fp16"][
        "error"]
    text = gpu_benchmark.summary(results)
    assert "inference 64x96 dsspn bf16" in text and "failed:" in text
    assert "DSSPN time / flat time at inference: bf16" in text


def load_benchmark(name):
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark",
                                                  REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_ablation_compares_every_head_at_the_same_budgets():
    ablation = load_benchmark("ablation")
    args = argparse.Namespace(budgets=[100, 200], datasets=["cityscapes", "ade"],
                              variants=list(ablation.VARIANTS), universal=True)
    runs = ablation.plan(args)
    for budget in (100, 200):
        for setting in ("cityscapes", "ade", "joint"):
            assert {("dsspn", setting, budget), ("flat", setting, budget)} <= set(runs)
        for variant in ablation.VARIANTS:       # every ablation at least jointly
            assert (variant, "joint", budget) in runs
    # The table reports the gap to flat and the universal model against the single ones.
    results = [{"variant": v, "setting": s, "budget": 100, "mIoU": m, "centred_mIoU": {},
                "iou_per_level": {"1": 60.0}, "images_per_s": 20.0}
               for v, s, m in [("dsspn", "cityscapes", {"cityscapes": 30.0}),
                               ("flat", "cityscapes", {"cityscapes": 31.5}),
                               ("dsspn", "joint", {"cityscapes": 32.0}),
                               ("flat", "joint", {"cityscapes": 30.0})]]
    text = ablation.table(results, ["cityscapes"])
    assert "cityscapes    100 steps: cityscapes -1.5" in text
    assert "joint         100 steps: cityscapes +2.0" in text
    assert "dsspn  joint  100 vs single  100 steps: cityscapes +2.0" in text
    assert ("dsspn", "joint", 200) in runs and ("flat", "joint", 200) in runs  # 2 x 100


@pytest.fixture
def zeroshot_benchmark(monkeypatch):
    # Run as a script, benchmarks/zeroshot.py finds ablation.py beside it: the same here.
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    return load_benchmark("zeroshot")


def _zeroshot_run(head, seed, scores, trained=30.0):
    zero_shot = {name: {"mIoU": v, "mIoU_named": v + 5, "pixel_acc": 50.0, "images": 8,
                        "split": "val", "unnamed": ["void"] if name == "camvid" else [],
                        "shared": []}
                 for name, v in scores.items()}
    return {"head": head, "seed": seed, "holdout": "cityscapes",
            "trained_on": ["coco", "ade", "mapillary"], "steps": 300, "zero_shot": zero_shot,
            "harmonic_mean": {"mIoU": 20.0, "mIoU_named": 25.0},
            "trained": {"coco": trained, "ade": trained, "mapillary": trained},
            "images_per_s": 10.0, "seconds": 100.0}


def test_the_zero_shot_table_averages_seeds_and_gives_the_gap_to_flat(zeroshot_benchmark):
    assert zeroshot_benchmark.trained_on("cityscapes") == ["coco", "ade", "mapillary"]
    assert zeroshot_benchmark.tested_on("coco") == ["coco", "camvid", "voc"]
    results = [_zeroshot_run("dsspn", 0, {"cityscapes": 30.0, "camvid": 20.0, "voc": 10.0}),
               _zeroshot_run("dsspn", 1, {"cityscapes": 32.0, "camvid": 22.0, "voc": 12.0}),
               _zeroshot_run("flat", 0, {"cityscapes": 25.0, "camvid": 21.0, "voc": 10.0}),
               _zeroshot_run("flat", 1, {"cityscapes": 27.0, "camvid": 23.0, "voc": 14.0})]
    text = zeroshot_benchmark.table(results)
    assert "cityscapes held out: trained on coco, ade, mapillary, 300 steps" in text
    rows = [line.split() for line in text.splitlines()]
    assert ["dsspn", "mean", "31.0", "(36.0)", "21.0", "(26.0)", "11.0", "(16.0)", "20.0",
            "(25.0)", "30.0", "100"] in rows
    assert ("DSSPN - flat, mIoU: cityscapes +5.0, camvid -1.0, voc -1.0, harmonic mean "
            "+0.0, trained +0.0") in text
    assert "  camvid: unnamed: void" in text
    assert "  voc: the tree names every class" in text


def test_the_zero_shot_benchmark_runs_tiny(zeroshot_benchmark, tmp_path, capsys):
    """Both heads trained on three sample datasets with a tree of theirs alone, scored
    zero-shot on the fourth and the held-out sets; the JSON gives the table back; stopped,
    it continues in its --work folder without training again."""
    out, work = tmp_path / "zeroshot.json", tmp_path / "work"
    assert zeroshot_benchmark.main(["--quick", "--json", str(out), "--work", str(work)]) == 0
    printed = capsys.readouterr().out
    payload = json.loads(out.read_text())
    assert [(r["head"], r["seed"]) for r in payload["runs"]] == [("dsspn", 0), ("flat", 0)]
    for run in payload["runs"]:
        assert run["trained_on"] == ["coco", "ade", "mapillary"]
        assert list(run["zero_shot"]) == ["cityscapes", "camvid", "voc"]
        assert {s["split"] for s in run["zero_shot"].values()} == {"val", "test"}
        assert set(run["trained"]) == {"coco", "ade", "mapillary"}
        assert 0 <= run["harmonic_mean"]["mIoU"] <= run["harmonic_mean"]["mIoU_named"] <= 100
    assert payload["table"] in printed
    assert zeroshot_benchmark.main(["--table", str(out)]) == 0
    assert capsys.readouterr().out.strip() == payload["table"]
    assert "tree-without-cityscapes" in str(list(work.glob("*.yaml")))
    # Stopped after training DSSPN, before scoring it: scored again, not trained again.
    (work / "dsspn-cityscapes-0" / "record.json").unlink()
    trained_at = (work / "dsspn-cityscapes-0" / "checkpoints" / "last.pt").stat().st_mtime
    again = tmp_path / "again.json"
    assert zeroshot_benchmark.main(["--quick", "--json", str(again), "--work", str(work)]) == 0
    assert (work / "dsspn-cityscapes-0" / "checkpoints" / "last.pt").stat().st_mtime == \
        trained_at
    runs = json.loads(again.read_text())["runs"]
    for before, now in zip(payload["runs"], runs):
        for key in ("zero_shot", "harmonic_mean", "trained", "images_per_s"):
            assert now[key] == before[key]
        assert now["seconds"] > 0
    # A folder of other settings is refused.
    (work / "settings.json").write_text('{"steps": 3}')
    with pytest.raises(SystemExit, match="holds runs with other settings"):
        zeroshot_benchmark.main(["--quick", "--work", str(work)])
