"""DSSPN against the flat baseline beyond their training label sets: both trained on three of
the four sample datasets, and scored zero-shot on the fourth and on the held-out sample test
sets (CamVid, Pascal VOC), in each one's own classes, by ``dsspn evaluate``'s engine.

Zero-shot means the model's tree holds none of the held-out labels: the tree is merged from
the three training label sets alone (``dsspn hierarchy merge``, the shipped tree's order less
the held-out dataset), both heads are trained on it with ``dsspn train``'s engine and the
budget of ``ablation.py`` (ResNet-18 from scratch, output stride 16, crop 112, batch 8, lr
0.01, poly schedule, the same steps and seeds for both heads), and each test set is scored
through the vocabulary mapping onto that tree. The headline mIoU counts the classes the
model cannot name (no concept) or cannot tell apart (several classes on one concept) as 0;
the named mIoU leaves them out. The harmonic mean over the test sets is MSeg's headline.

Training uses the sample data of ``ablation.py`` (32 training images per dataset); the test
sets are scored on more images than its 8 validation ones (``--eval-images``, 32 each), drawn
from the same seeds (the first 8 are the same images). Beside them, ``trained``: the mean
mIoU on the three training datasets (their 8 validation images each, as training's own
validation scored them at the end), what the model learned beside what it carries over.

Default: Cityscapes held out (its street classes are all covered by Mapillary's finer ones,
so a model that learned Mapillary's classes can name them all), seeds 0 and 1, 300 steps,
4 trainings: about 20 minutes on 2 cores. ``--holdout`` takes several datasets for more
rotations (4 trainings each). On a shared machine, ``--work DIR`` keeps everything in DIR:
the same command again continues a benchmark that was stopped (each run scored is kept, a
finished training is only scored, a training cut short starts again).

    python benchmarks/zeroshot.py --json benchmarks/results/zeroshot.json [--work DIR]
    python benchmarks/zeroshot.py --table benchmarks/results/zeroshot.json   # the table again
    python benchmarks/zeroshot.py --quick                                    # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from ablation import _mean, common_options, machine, sample_data, train_run

from dsspn_cli.data.sample import DATASETS, FOLDERS, HELD_OUT
from dsspn_cli.engine.scoring import evaluate_checkpoint, harmonic_mean
from dsspn_cli.files import atomic_write_text
from dsspn_cli.hierarchy.labelset import load_labelset
from dsspn_cli.hierarchy.merge import merge_labelsets

HEADS = ("dsspn", "flat")
RECORD = "record.json"                  # a scored run's record, in its folder
MERGE_ORDER = ("coco", "ade", "cityscapes", "mapillary")    # the shipped tree's


def trained_on(holdout: str) -> list[str]:
    """The training datasets when ``holdout`` is held out, in the shipped tree's merge order
    (the first is the skeleton)."""
    return [name for name in MERGE_ORDER if name != holdout]


def tested_on(holdout: str) -> list[str]:
    """The zero-shot test sets: the held-out training dataset, then the held-out sample sets."""
    return [holdout, *HELD_OUT]


def merge_tree(holdout: str, out: Path, wn) -> Path:
    """The concept tree of the three training label sets, written to ``out``: nothing of the
    held-out dataset's label set is in it."""
    tree, _ = merge_labelsets([load_labelset(name) for name in trained_on(holdout)], wn,
                              output_dir=out.parent)
    assert holdout not in tree.datasets
    return tree.save(out, header=f"# benchmarks/zeroshot.py: {' '.join(trained_on(holdout))}"
                                 f" (without {holdout})\n")


def run_one(head: str, seed: int, holdout: str, args, train_data: dict, eval_data: dict,
            tree: Path, work: Path, wn) -> dict:
    out = work / f"{head}-{holdout}-{seed}"
    if (out / RECORD).is_file():                # done by an earlier run with this --work
        return json.loads((out / RECORD).read_text())
    trained = trained_on(holdout)
    timing = finished_training(out, args.steps)
    if timing is None:
        shutil.rmtree(out, ignore_errors=True)  # a training cut short starts again
        result, seconds = train_run(head, {d: train_data[d] for d in trained}, out,
                                    args.steps, args, seed, tree=str(tree))
        timing = {"images_per_s": result.get("images_per_s", 0.0), "seconds": seconds}
    started = time.perf_counter()
    report = evaluate_checkpoint(out / "checkpoints" / "last.pt",
                                 {d: eval_data[d] for d in tested_on(holdout)},
                                 device="cpu", workers=args.workers, wn=wn)
    scoring = time.perf_counter() - started
    # The training datasets as training's own validation at the end scored them (their val
    # split, in their own classes): what the model learned, beside what it carries over.
    val = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    val = [record for record in val if "val" in record][-1]
    scores = report.results
    zero_shot = {}
    for name in tested_on(holdout):
        found = scores[name]
        assert found.get("zero_shot"), f"{name} was not scored zero-shot"
        zero_shot[name] = {"mIoU": round(found["mIoU"], 2),
                           "mIoU_named": round(found["mIoU_named"], 2),
                           "pixel_acc": round(found["pixel_acc"], 2),
                           "images": found["images"], "split": found["split"],
                           "unnamed": found["unnamed"], "shared": found["shared"],
                           "iou": {cls: None if row["iou"] is None else round(row["iou"], 1)
                                   for cls, row in found["per_class"].items()}}
    record = {"head": head, "seed": seed, "holdout": holdout, "trained_on": trained,
              "steps": args.steps, "zero_shot": zero_shot,
              "harmonic_mean": {key: round(harmonic_mean(s[key] for s in zero_shot.values()),
                                           2) for key in ("mIoU", "mIoU_named")},
              "trained": {name: round(val["val"][name]["mIoU"], 2) for name in trained},
              "val_seconds": val["val_seconds"],
              "images_per_s": round(timing["images_per_s"], 1),
              "seconds": round(timing["seconds"], 1), "scoring_seconds": round(scoring, 1)}
    atomic_write_text(out / RECORD, json.dumps(record, indent=1) + "\n")
    return record


def finished_training(out: Path, steps: int) -> dict | None:
    """The training images/s and seconds of a run folder whose training finished ``steps``
    steps but was not scored (the benchmark was stopped): from its metrics.jsonl and its
    files' times (config.yaml written at the start, metrics.jsonl last at the end, after
    the final validation, as ``train_run`` times it); None when it did not finish."""
    metrics = out / "metrics.jsonl"
    if not (metrics.is_file() and (out / "checkpoints" / "last.pt").is_file()):
        return None
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    if not any("val" in r and r["step"] == steps for r in records):
        return None
    return {"images_per_s": [r for r in records if "images_per_s" in r][-1]["images_per_s"],
            "seconds": metrics.stat().st_mtime - (out / "config.yaml").stat().st_mtime}


def check_work(work: Path, args, size) -> None:
    """A --work folder is continued with the settings it was started with, or refused."""
    settings = {"steps": args.steps, "images": args.images, "eval_images": args.eval_images,
                "crop": args.crop, "batch": args.batch, "size": list(size)}
    saved = work / "settings.json"
    if saved.is_file() and json.loads(saved.read_text()) != settings:
        sys.exit(f"benchmarks/zeroshot.py: --work {work} holds runs with other settings "
                 f"({saved.read_text().strip()}); use another folder")
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_text(saved, json.dumps(settings) + "\n")


def kept_sample(folder: Path, images: int, size) -> dict[str, str]:
    """The sample data in ``folder``, written unless a --work folder has it all already."""
    found = {name: str(folder / path) for name, path in FOLDERS.items()}
    if (folder / "README.txt").is_file() and all(Path(p).is_dir() for p in found.values()):
        return found
    return sample_data(folder, images, size)


def _cell(miou: float, named: float) -> str:
    return f"{miou:.1f} ({named:.1f})"


def rows(runs: list[dict]) -> list[tuple[str, str, dict]]:
    """(head, seed or 'mean', {column: (mIoU, named mIoU)}) of one held-out dataset's runs:
    each seed, then the mean over seeds, per head."""
    lines = []
    for head in dict.fromkeys(r["head"] for r in runs):
        mine = sorted((r for r in runs if r["head"] == head), key=lambda r: r["seed"])
        cells = []
        for r in mine:
            cell = {name: (s["mIoU"], s["mIoU_named"]) for name, s in r["zero_shot"].items()}
            cell["harmonic mean"] = (r["harmonic_mean"]["mIoU"], r["harmonic_mean"]["mIoU_named"])
            cell["trained"] = (_mean(r["trained"].values()),) * 2
            cell["train s"] = (r["seconds"],) * 2
            cells.append(cell)
            lines.append((head, str(r["seed"]), cell))
        if len(mine) > 1:
            lines.append((head, "mean", {k: tuple(_mean([c[k][i] for c in cells])
                                                  for i in range(2))
                                         for k in cells[0]}))
    return lines


def table(results: list[dict]) -> str:
    """Per held-out dataset: a row per head and seed and their mean (zero-shot mIoU with the
    classes the model cannot name as 0, named mIoU in parentheses, harmonic mean over the
    test sets, mean mIoU on the training datasets, training seconds), the DSSPN-flat gaps
    and the classes the tree cannot name or tell apart."""
    out = []
    for holdout in dict.fromkeys(r["holdout"] for r in results):
        runs = [r for r in results if r["holdout"] == holdout]
        tests = list(runs[0]["zero_shot"])
        steps = sorted({r["steps"] for r in runs})
        out += [f"{holdout} held out: trained on {', '.join(runs[0]['trained_on'])}, "
                f"{'/'.join(map(str, steps))} steps; zero-shot mIoU on "
                f"{', '.join(tests)} (classes it cannot name count 0; named mIoU in "
                "parentheses)"]
        columns = tests + ["harmonic mean"]
        head = (f"{'head':<6} {'seed':>4} " + " ".join(f"{c:>13}" for c in columns) +
                f" {'trained':>8} {'train s':>8}")
        out += [head, "-" * len(head)]
        found = rows(runs)
        for name, seed, cell in found:
            out.append(f"{name:<6} {seed:>4} " +
                       " ".join(f"{_cell(*cell[c]):>13}" for c in columns) +
                       f" {cell['trained'][0]:>8.1f} {cell['train s'][0]:>8.0f}")
        means = {name: cell for name, seed, cell in found
                 if seed == "mean" or len([f for f in found if f[0] == name]) == 1}
        if "dsspn" in means and "flat" in means:
            gaps = ", ".join(f"{c} {means['dsspn'][c][0] - means['flat'][c][0]:+.1f}"
                             for c in columns + ["trained"])
            out.append(f"DSSPN - flat, mIoU: {gaps}")
        for test in tests:
            cannot = {kind: sorted({c for r in runs for c in r["zero_shot"][test][kind]})
                      for kind in ("unnamed", "shared")}
            said = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in cannot.items()
                             if names)
            out.append(f"  {test}: {said or 'the tree names every class'}")
        out.append("")
    return "\n".join(out).rstrip()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--holdout", nargs="+", default=["cityscapes"], choices=DATASETS,
                        help="the training dataset(s) held out, one rotation each")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--heads", nargs="+", default=list(HEADS), choices=HEADS)
    parser.add_argument("--eval-images", type=int, default=32, help="images per test set")
    parser.add_argument("--work", help="keep the sample data, trees, checkpoints and each "
                        "run's record here (default: a temporary folder), and continue the "
                        "benchmark in it when it was stopped: a run scored is not run again, "
                        "one whose training finished is only scored")
    common_options(parser, table="several seeds averaged", quick="2 steps, tiny data, one "
                   "seed")
    args = parser.parse_args(argv)
    size = (128, 256)               # the sample data's images, as ablation.py trains on
    if args.quick:
        args.steps, args.images, args.eval_images, args.crop, args.batch = 2, 4, 1, 32, 2
        args.seeds, size = [0], (32, 64)
    if args.table:
        results = [r for path in args.table for r in json.loads(Path(path).read_text())["runs"]]
        print(table(results))
        return 0
    from dsspn_cli.hierarchy.wordnet import wordnet

    torch.set_num_threads(max(1, (os.cpu_count() or 2)))
    wn = wordnet()
    results = []
    began = time.perf_counter()
    with (nullcontext(args.work) if args.work else
          tempfile.TemporaryDirectory(prefix="dsspn-zeroshot-")) as work:
        work = Path(work)
        check_work(work, args, size)
        train_data = kept_sample(work / "train", args.images, size)
        # Validation and test splits hold a quarter of the training images (2 at least).
        eval_data = (train_data if 4 * args.eval_images == args.images else
                     kept_sample(work / "eval", 4 * args.eval_images, size))
        plan = [(holdout, head, seed) for holdout in args.holdout for seed in args.seeds
                for head in args.heads]
        trees = {holdout: merge_tree(holdout, work / f"tree-without-{holdout}.yaml", wn)
                 for holdout in args.holdout}
        started = time.perf_counter()
        for i, (holdout, head, seed) in enumerate(plan, 1):
            record = run_one(head, seed, holdout, args, train_data, eval_data, trees[holdout],
                             work, wn)
            results.append(record)
            scores = ", ".join(f"{k} {v['mIoU']:.1f}" for k, v in record["zero_shot"].items())
            print(f"[{i}/{len(plan)}] {head} seed {seed}, {holdout} held out, {args.steps} "
                  f"steps: zero-shot {scores}, harmonic {record['harmonic_mean']['mIoU']:.1f} "
                  f"({record['seconds']:.0f} s; {(time.perf_counter() - started) / 60:.1f} "
                  "min so far)", flush=True)
        minutes = (time.perf_counter() - began) / 60
    text = table(results)
    print()
    print(text)
    print(f"\n{minutes:.1f} min in all")
    if args.json:
        payload = {**machine(), "settings": {k: v for k, v in vars(args).items()
                                             if k not in ("json", "table")},
                   "minutes": round(minutes, 1), "runs": results, "table": text}
        atomic_write_text(args.json, json.dumps(payload, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
