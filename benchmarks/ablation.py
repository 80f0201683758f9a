"""DSSPN against its flat baseline and the paper's ablations (its Table 1), trained with
``dsspn train``'s own engine on the built-in sample data and scored by ``dsspn evaluate``'s.

Every run shares the data, the backbone (ResNet-18 from scratch, output stride 16), the crop,
batch, learning rate, poly schedule and seed; only the head differs. Each run is trained to
each budget from scratch (a poly schedule ends at its budget, so an early checkpoint of a
longer run is not the same thing), and the table gives:

- mIoU per dataset, in the dataset's own classes;
- IoU per level of the tree (level 1 = the root's decision), averaged over the datasets;
- training images/s;
- for DSSPN and flat, ``centred``: the mIoU when the logits are upsampled as
  ``F.interpolate(align_corners=False)`` would (feature cell i at pixel s*i + (s-1)/2, half
  a stride off the pixel s*i its training label came from) instead of aligned.

Plan (the default, about 30 minutes on 2 cores): DSSPN and flat on each dataset alone and
on all four jointly; the paper's readout and its ablations (parent features only,
summation, softmax, fixed structure) jointly. ``--quick`` is a smoke run.

    python benchmarks/ablation.py [--budgets 100 200] [--images 32] [--json FILE] [--quick]
    python benchmarks/ablation.py --universal --variants dsspn flat --datasets ... (adds the
        joint runs at 4x the steps: the universal model against the single-dataset ones)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from dsspn_cli.data.dataset import SegmentationDataset
from dsspn_cli.data.sample import DATASETS, FOLDERS, write_sample_data
from dsspn_cli.engine.checkpoint import load_model
from dsspn_cli.engine.config import TrainConfig
from dsspn_cli.engine.evaluate import evaluate
from dsspn_cli.engine.train import train
from dsspn_cli.files import atomic_write_text

# name -> head settings (the rest of the head's defaults stay)
VARIANTS = {
    "dsspn": {},
    "flat": {"type": "flat"},
    "paper readout": {"readout": "hidden"},
    "parent only": {"ancestors": "parent"},
    "sum": {"combine": "sum"},
    "softmax": {"loss": "softmax"},
    "fixed": {"structure": "fixed"},
}
ALONE = ("dsspn", "flat")            # trained on each dataset alone, and jointly
JOINT = "joint"


def plan(args) -> list[tuple[str, str, int]]:
    """(variant, setting, budget) of every run: settings are a dataset or 'joint'."""
    runs = []
    for budget in args.budgets:
        for setting in list(args.datasets) + [JOINT]:
            for variant in args.variants:
                if setting == JOINT or variant in ALONE:
                    runs.append((variant, setting, budget))
    if args.universal:
        # Each dataset of a joint run sees about a quarter of the steps: at four times the
        # smallest budget it gets as many of its own images as its single-dataset run.
        budget = len(args.datasets) * min(args.budgets)
        runs += [(variant, JOINT, budget) for variant in ALONE
                 if variant in args.variants and (variant, JOINT, budget) not in runs]
    return runs


def sample_data(folder: Path, images: int, size=(128, 256)) -> dict[str, str]:
    """The sample data written under ``folder`` (seed 0, ``images`` training images per
    dataset, (height, width) ``size``), as ``{dataset: root}``: the four training datasets
    and the held-out ones."""
    counts = write_sample_data(folder, seed=0, images=images, size=size)
    return {name: str(folder / FOLDERS[name]) for name in counts}


def train_run(variant: str, data: dict[str, str], out: Path, budget: int, args, seed: int,
              tree: str | None = None) -> tuple[dict, float]:
    """``dsspn train``'s engine on ``data`` with the benchmarks' budget (ResNet-18 from
    scratch, output stride 16, ``args.crop``, ``args.batch``, lr 0.01, poly schedule, CPU),
    the head of ``variant``, into ``out`` (``out/checkpoints/last.pt``); ``tree``: a concept
    tree file (default: the shipped one). Returns train's result and the seconds it took."""
    config = TrainConfig(
        data=data, out=str(out), tree=tree, backbone="resnet18", output_stride=16,
        crop=args.crop, batch_size=args.batch, lr=0.01, iters=budget, seed=seed,
        workers=args.workers, device="cpu", checkpoint_every=budget, val_every=budget * 10,
        val_images=0, log_every=max(1, budget // 5), scan=False, head={**VARIANTS[variant]})
    started = time.perf_counter()
    result = train(config)
    return result, time.perf_counter() - started


def machine() -> dict:
    """Where the results were measured, for the JSON."""
    return {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "torch": torch.__version__}


def run_one(variant, setting, budget, args, data, work: Path) -> dict:
    datasets = list(args.datasets) if setting == JOINT else [setting]
    out = work / f"{variant.replace(' ', '-')}-{setting}-{budget}"
    result, seconds = train_run(variant, {d: data[d] for d in datasets}, out, budget, args,
                                args.seed)
    model, table, _, _ = load_model(out / "checkpoints" / "last.pt")
    scores, centred, levels = {}, {}, {}
    for name in datasets:
        val = SegmentationDataset(data[name], name, "val", table)
        found = evaluate(model, val)
        scores[name] = round(found["mIoU"], 2)
        for level, value in found["iou_per_level"].items():
            levels.setdefault(level, []).append(value)
        if variant in ("dsspn", "flat"):
            model.aligned = False
            centred[name] = round(evaluate(model, val)["mIoU"], 2)
            model.aligned = True
    return {"variant": variant, "setting": setting, "budget": budget,
            "mIoU": scores, "centred_mIoU": centred,
            "iou_per_level": {k: round(sum(v) / len(v), 1) for k, v in sorted(levels.items())},
            "images_per_s": round(result.get("images_per_s", 0.0), 1),
            "seconds": round(seconds, 1)}


def _mean(values) -> float:
    return round(sum(values) / len(values), 2)


def _means(runs: list[dict], key: str) -> dict:
    return {k: _mean([r[key][k] for r in runs]) for k in runs[0][key]}


def averaged(results: list[dict]) -> list[dict]:
    """The runs of one head, setting and budget (several seeds) as one record of means, in
    the order they first appear."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["variant"], r["setting"], r["budget"]), []).append(r)
    merged = []
    for (variant, setting, budget), runs in groups.items():
        merged.append({"variant": variant, "setting": setting, "budget": budget,
                       "seeds": len(runs), "mIoU": _means(runs, "mIoU"),
                       "centred_mIoU": _means(runs, "centred_mIoU"),
                       "iou_per_level": _means(runs, "iou_per_level"),
                       "images_per_s": _mean([r["images_per_s"] for r in runs])})
    return merged


def table(results: list[dict], datasets) -> str:
    """One line per head, setting and budget (the mean over seeds); the DSSPN-flat gaps and
    the universal model against the single-dataset ones last."""
    results = averaged(results)
    names = list(datasets)
    head = (f"{'head':<14} {'trained on':<11} {'steps':>5} {'seeds':>5} " +
            " ".join(f"{n[:10]:>10}" for n in names) +
            f" {'levels 1/2/3/4':>16} {'img/s':>6} {'centred':>8}")
    lines = [head, "-" * len(head)]
    for r in results:
        cells = " ".join(f"{r['mIoU'][n]:>10.1f}" if n in r["mIoU"] else f"{'':>10}"
                         for n in names)
        levels = "/".join(f"{r['iou_per_level'].get(str(k), 0):.0f}" for k in range(1, 5))
        centred = ""
        if r["centred_mIoU"]:
            delta = [r["centred_mIoU"][n] - r["mIoU"][n] for n in r["mIoU"]]
            centred = f"{sum(delta) / len(delta):+.1f}"
        lines.append(f"{r['variant']:<14} {r['setting']:<11} {r['budget']:>5} "
                     f"{r['seeds']:>5} {cells} "
                     f"{levels:>16} {r['images_per_s']:>6.1f} {centred:>8}")
    lines += ["", "DSSPN - flat, mIoU (the goal: at least -1 everywhere)"]
    by_key = {(r["variant"], r["setting"], r["budget"]): r for r in results}
    for (variant, setting, budget), r in by_key.items():
        other = by_key.get(("flat", setting, budget))
        if variant != "dsspn" or other is None:
            continue
        gaps = ", ".join(f"{n} {r['mIoU'][n] - other['mIoU'][n]:+.1f}" for n in r["mIoU"])
        lines.append(f"  {setting:<11} {budget:>5} steps: {gaps}")
    lines += ["", "universal (joint) - single-dataset model, mIoU: at the same steps, and "
              "with each dataset's images as many (joint steps = datasets x single steps)"]
    singles = sorted({r["budget"] for r in results if r["setting"] != JOINT})
    for variant in ALONE:
        for single in singles:
            for joint_budget in sorted({single, len(names) * single}):
                joint = by_key.get((variant, JOINT, joint_budget))
                gaps = [f"{n} {joint['mIoU'][n] - by_key[(variant, n, single)]['mIoU'][n]:+.1f}"
                        for n in names if joint and (variant, n, single) in by_key]
                if gaps:
                    lines.append(f"  {variant:<6} joint {joint_budget:>4} vs single {single:>4} "
                                 f"steps: {', '.join(gaps)}")
    return "\n".join(lines)


def common_options(parser, table: str, quick: str) -> None:
    """The options of the benchmarks that train on the sample data: the data and budget
    (``train_run``'s), the results file, ``--table`` (``table``: what it does besides
    printing) and ``--quick`` (``quick``: what the smoke run runs)."""
    parser.add_argument("--images", type=int, default=32, help="training images per dataset")
    parser.add_argument("--crop", type=int, default=112)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--table", nargs="+", metavar="JSON", help="train nothing: print "
                        f"the table of these results files ({table})")
    parser.add_argument("--quick", action="store_true", help=f"a smoke run: {quick}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", type=int, nargs="+", default=[100, 200])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--universal", action="store_true", help="also DSSPN and flat "
                        "jointly at (datasets x the smallest budget) steps")
    common_options(parser, table="runs of several seeds averaged",
                   quick="2 tiny budgets, dsspn and flat on Cityscapes and jointly")
    args = parser.parse_args(argv)
    if args.quick:
        args.budgets, args.images, args.crop, args.batch = [2, 4], 4, 64, 2
        args.datasets, args.variants = ["cityscapes", "ade"], ["dsspn", "flat", "softmax"]
    if args.table:
        results = []
        for path in args.table:
            payload = json.loads(Path(path).read_text())
            results += [{**r, "seed": payload["settings"]["seed"]} for r in payload["runs"]]
        names = [n for n in DATASETS if any(n in r["mIoU"] for r in results)]
        print(table(results, names))
        return 0
    torch.set_num_threads(max(1, (os.cpu_count() or 2)))
    runs = plan(args)
    results = []
    with tempfile.TemporaryDirectory(prefix="dsspn-ablation-") as work:
        work = Path(work)
        data = sample_data(work / "data", args.images)
        started = time.perf_counter()
        for i, (variant, setting, budget) in enumerate(runs, 1):
            record = run_one(variant, setting, budget, args, data, work)
            results.append(record)
            elapsed = time.perf_counter() - started
            scores = ", ".join(f"{k} {v:.1f}" for k, v in record["mIoU"].items())
            print(f"[{i}/{len(runs)}] {variant} on {setting}, {budget} steps: {scores} "
                  f"({record['seconds']:.0f} s; {elapsed / 60:.1f} min so far)", flush=True)
    text = table(results, args.datasets)
    print()
    print(text)
    if args.json:
        payload = {**machine(), "settings": {k: v for k, v in vars(args).items() if k != "json"},
                   "runs": results, "table": text}
        atomic_write_text(args.json, json.dumps(payload, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
