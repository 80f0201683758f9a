"""Hedged prediction, DSSPN against the flat baseline, on the built-in sample data.

Both heads are trained as ``make demo`` trains its model (ResNet-18 from scratch, output
stride 16, crop 112, batch 8, lr 0.01, all four sample datasets jointly, 600 steps), with
each seed; training, loss and targets are those of ``dsspn train``: hedging changes
inference only. Each model is then scored as ``dsspn evaluate --hedge`` scores it (the
engine's ``evaluate``, one forward pass per image), on the four validation splits:

- the specificity it keeps at hierarchical accuracy 0.90 and 0.95 (the smallest threshold
  from which the accuracy stays at the target; pooled over the datasets' pixels, and per
  dataset), and the accuracy it reaches with no hedging (every pixel at its leaf);
- calibration on held-out images: the thresholds found on the validation splits for 0.90
  and 0.95, applied to fresh images drawn with another seed (never trained on), and the
  accuracy reached there.

The goal: at equal accuracy, DSSPN keeps more specificity than the flat baseline.

    python benchmarks/hedging.py [--iters 600] [--seeds 0 1] [--work runs/hedging]
        [--json benchmarks/results/hedging.json] [--plot benchmarks/results/hedging.png]

Trained models are kept in ``--work`` and reused (an interrupted run resumes).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import torch
from ablation import machine

from dsspn_cli.data.dataset import SegmentationDataset
from dsspn_cli.data.sample import DATASETS, FOLDERS, write_sample_data
from dsspn_cli.engine.checkpoint import load_model
from dsspn_cli.engine.config import TrainConfig
from dsspn_cli.engine.evaluate import evaluate
from dsspn_cli.engine.hedging import curves_png, point, pooled_curve
from dsspn_cli.engine.train import train
from dsspn_cli.files import atomic_write_bytes, atomic_write_text

HEADS = {"dsspn": {}, "flat": {"type": "flat"}}
TARGETS = (0.9, 0.95)
POOLED = "all"


def train_one(head: str, seed: int, args, data: dict, work: Path) -> Path:
    """The demo recipe's model with this head and seed (resumed or reused when there)."""
    out = work / f"{head}-seed{seed}-{args.iters}"
    last = out / "checkpoints" / "last.pt"
    config = TrainConfig(
        data=data, out=str(out), backbone="resnet18", output_stride=16, crop=args.crop,
        batch_size=8, lr=0.01, iters=args.iters, seed=seed, workers=1, device="cpu",
        checkpoint_every=200, val_every=args.iters, val_images=0, log_every=50, scan=False,
        head=dict(HEADS[head]))
    started = time.perf_counter()
    result = train(config, resume=last.is_file())
    if not result.get("already_finished"):
        print(f"{head} seed {seed}: trained {args.iters} steps "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
    return last


def accuracy_at(curve: dict, threshold: float) -> float:
    return curve["accuracy"][curve["thresholds"].index(threshold)]


def score(checkpoint: Path, data: dict, fresh: dict) -> dict:
    """One model's curves on the validation splits and on the fresh images, and what the
    table reads off them."""
    model, table, _, _ = load_model(checkpoint)
    curves, held_out = {}, {}
    for name in DATASETS:
        val = SegmentationDataset(data[name], name, "val", table)
        curves[name] = evaluate(model, val, hedge=True)["hedging"]
        other = SegmentationDataset(fresh[name], name, "train", table)
        held_out[name] = evaluate(model, other, hedge=True)["hedging"]
    curves[POOLED], held_out[POOLED] = pooled_curve(curves), pooled_curve(held_out)
    found = {}
    for name, curve in curves.items():
        points = {str(t): point(curve, t) for t in TARGETS}
        for t in TARGETS:       # the validation threshold, on images it never saw
            points[str(t)]["held_out_accuracy"] = accuracy_at(
                held_out[name], points[str(t)]["threshold"])
        found[name] = {"leaf_accuracy": curve["accuracy"][0],
                       "leaf_specificity": curve["specificity"][0], "targets": points,
                       "pixels": curve["pixels"], "held_out_pixels": held_out[name]["pixels"]}
    for curve in list(curves.values()) + list(held_out.values()):
        curve.pop("right", None)
        curve.pop("operating_points", None)
    return {"scores": found, "curves": curves, "held_out_curves": held_out}


def readable_json(payload: dict) -> str:
    """Indented JSON with each list of numbers (a curve: 201 thresholds) on one line."""
    text = json.dumps(payload, indent=1)
    return re.sub(r"\[\s*(-?[\d.e+-]+(?:,\s*-?[\d.e+-]+)*)\s*\]",
                  lambda m: "[" + " ".join(m.group(1).split()) + "]", text) + "\n"


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def table(runs: list[dict]) -> str:
    """Pooled over the datasets: a line per head and seed, and the mean over seeds; then
    the specificity at 0.90 per dataset (mean over seeds)."""
    head = (f"{'head':<6} {'seed':>4} {'leaf acc':>9} {'spec@0.90':>10} {'spec@0.95':>10} "
            f"{'t@0.90':>8} {'t@0.95':>8} {'held-out acc@0.90':>18} {'@0.95':>7}")
    lines = [head, "-" * len(head)]

    def line(name, seed, rows):
        s = [r["scores"][POOLED] for r in rows]

        def get(key, t):
            return _mean(x["targets"][t][key] for x in s)

        return (f"{name:<6} {seed:>4} {100 * _mean(x['leaf_accuracy'] for x in s):>9.2f} "
                f"{get('specificity', '0.9'):>10.3f} {get('specificity', '0.95'):>10.3f} "
                f"{get('threshold', '0.9'):>8.4f} {get('threshold', '0.95'):>8.4f} "
                f"{100 * get('held_out_accuracy', '0.9'):>18.2f} "
                f"{100 * get('held_out_accuracy', '0.95'):>7.2f}")

    for name in HEADS:
        rows = [r for r in runs if r["head"] == name]
        for r in rows:
            lines.append(line(name, str(r["seed"]), [r]))
        if len(rows) > 1:
            lines.append(line(name, "mean", rows))
    lines += ["", "specificity at hierarchical accuracy 0.90 (0.95), per dataset, mean over "
              "seeds; leaf accuracy (%) beside"]
    for name in HEADS:
        rows = [r for r in runs if r["head"] == name]
        cells = []
        for d in DATASETS:
            s = [r["scores"][d] for r in rows]
            cells.append(f"{d} {_mean(x['targets']['0.9']['specificity'] for x in s):.3f} "
                         f"({_mean(x['targets']['0.95']['specificity'] for x in s):.3f}; "
                         f"{100 * _mean(x['leaf_accuracy'] for x in s):.1f})")
        lines.append(f"  {name:<6} " + ", ".join(cells))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="runs/hedging", help="trained models and data")
    parser.add_argument("--iters", type=int, default=600)
    parser.add_argument("--crop", type=int, default=112)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--heads", nargs="+", default=list(HEADS), choices=list(HEADS))
    parser.add_argument("--train-only", action="store_true", help="train, score nothing")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--plot", help="write the pooled and per-dataset curves here (PNG)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, (os.cpu_count() or 2)))
    work = Path(args.work)
    # The demo's data (its default sample), and fresh images of the same kind for the
    # calibration check: another seed draws other scenes.
    for folder, seed, images in (("data", 0, 16), ("fresh", 1, 8)):
        if not (work / folder / "README.txt").is_file():
            write_sample_data(work / folder, seed=seed, images=images)
    data = {name: str(work / "data" / FOLDERS[name]) for name in DATASETS}
    fresh = {name: str(work / "fresh" / FOLDERS[name]) for name in DATASETS}
    started = time.perf_counter()
    checkpoints = [(head, seed, train_one(head, seed, args, data, work))
                   for seed in args.seeds for head in args.heads]
    if args.train_only:
        return 0
    runs = []
    for head, seed, checkpoint in checkpoints:
        found = score(checkpoint, data, fresh)
        runs.append({"head": head, "seed": seed, "checkpoint": str(checkpoint), **found})
        pool = found["scores"][POOLED]
        print(f"{head} seed {seed}: leaf accuracy {100 * pool['leaf_accuracy']:.2f}%, "
              f"specificity {pool['targets']['0.9']['specificity']:.3f} at 0.90, "
              f"{pool['targets']['0.95']['specificity']:.3f} at 0.95 "
              f"({(time.perf_counter() - started) / 60:.1f} min so far)", flush=True)
    text = table(runs)
    print()
    print(text)
    if args.plot:
        atomic_write_bytes(args.plot, curves_png(
            [(f"{r['head']} seed {r['seed']}", r["curves"]) for r in runs]))
    if args.json:
        payload = {**machine(),
                   "settings": {k: v for k, v in vars(args).items()
                                if k not in ("json", "plot", "train_only")},
                   "recipe": "make demo: resnet18, output stride 16, crop 112, batch 8, "
                             "lr 0.01, the four sample datasets jointly",
                   "runs": runs, "table": text}
        atomic_write_text(args.json, readable_json(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
