"""``dsspn train`` and ``dsspn evaluate``: thin wrappers over dsspn_cli.engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from dsspn_cli.errors import UserError

# Without --data, training uses the built-in sample data and these settings (a CPU demo),
# unless the options say otherwise.
DEMO = {"backbone": "resnet18", "output_stride": 16, "crop": 112, "iters": 1500,
        "batch_size": 8, "lr": 0.01, "checkpoint_every": 500, "val_images": 8}


def parse_data(values: list[str] | None) -> dict:
    data = {}
    for value in values or []:
        if "=" not in value:
            raise UserError(f"--data {value}: write FORMAT=ROOT, like cityscapes=/data/cityscapes")
        fmt, root = value.split("=", 1)
        from dsspn_cli.data.formats import ALIASES, FORMATS

        fmt = ALIASES.get(fmt.lower(), fmt.lower())
        if fmt not in FORMATS:
            raise UserError(f"--data {value}: unknown format '{fmt}'; use one of "
                            f"{', '.join(FORMATS)}")
        if fmt in data:
            raise UserError(f"--data {value}: {fmt} is given twice")
        data[fmt] = root
    return data


def train_command(
    data: Optional[List[str]] = typer.Option(None, "--data", help="FORMAT=ROOT, repeat for "
                                             "joint training (default: the sample data)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default runs/train)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML with any of these "
                                          "settings; options given here override it."),
    iters: Optional[int] = typer.Option(None, "--iters", min=1),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1),
    crop: Optional[int] = typer.Option(None, "--crop", min=32),
    backbone: Optional[str] = typer.Option(None, "--backbone",
                                           help="resnet18, resnet50 or resnet101."),
    backbone_weights: Optional[Path] = typer.Option(None, "--backbone-weights",
                                                    help="torchvision ImageNet checkpoint."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate of the new layers."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    output_stride: Optional[int] = typer.Option(None, "--output-stride",
                                                help="8 (the paper's) or 16."),
    tree: Optional[Path] = typer.Option(None, "--tree", help="Concept tree (default: the "
                                        "shipped four-dataset tree)."),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", min=1),
    keep: Optional[int] = typer.Option(None, "--keep", min=1,
                                       help="step checkpoints to keep"),
    val_every: Optional[int] = typer.Option(None, "--val-every", min=1),
    finetune: Optional[int] = typer.Option(None, "--finetune", min=0, help="Universal "
                                           "schedule: after joint training, this many "
                                           "iterations on each dataset at a tenth of the LR."),
    init_from: Optional[Path] = typer.Option(None, "--init-from", help="Start from the "
                                             "weights of this checkpoint (same tree)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Leave out samples that cannot "
                                  "be read (listed in RUN/bad-files.txt); without it such "
                                  "samples stop the run before its first step."),
):
    """Train a DSSPN on one dataset or several jointly (torchrun for several processes)."""
    from rich.console import Console

    from dsspn_cli.engine.train import config_from, train

    options = {"data": parse_data(data) or None, "out": str(out) if out else None,
               "iters": iters, "epochs": epochs, "batch_size": batch_size, "crop": crop,
               "backbone": backbone, "lr": lr, "workers": workers, "device": device,
               "seed": seed, "tree": str(tree) if tree else None,
               "output_stride": output_stride,
               "backbone_weights": str(backbone_weights) if backbone_weights else None,
               "checkpoint_every": checkpoint_every, "keep": keep, "val_every": val_every,
               "finetune": finetune, "init_from": str(init_from) if init_from else None,
               "skip_bad": skip_bad or None}
    console = Console(stderr=True)
    in_file = _file_settings(config)
    if resume and out is not None and config is None and (out / "config.yaml").is_file():
        config = out / "config.yaml"          # continue with the settings the run had
    elif options["data"] is None and not in_file.get("data"):
        demo = {k: v for k, v in DEMO.items() if options.get(k) is None and k not in in_file}
        options.update(demo)
        if demo:
            console.print("no --data: training on the built-in sample data with CPU demo "
                          "settings (" + ", ".join(f"{k} {v}" for k, v in demo.items())
                          + "); options override them")
    result = train(config_from(config, options), resume=resume, console=console)
    run = Path(result["run"])
    if result.get("rank", 0) != 0:      # under torchrun, rank 0 speaks for the job
        return
    console.print(f"done: step {result.get('step')}, loss {result.get('loss', float('nan')):.4f}"
                  f", best validation mIoU {max(result.get('best_mIoU', -1), 0):.2f}; "
                  f"run folder {run} (checkpoints/last.pt, best.pt, metrics.jsonl, curves.png)")


def _file_settings(config: Path | None) -> dict:
    """The config file's settings (to leave the demo defaults out of what it sets)."""
    if config is None:
        return {}
    from dsspn_cli.io import read_yaml

    loaded = read_yaml(config, "training config")
    return loaded if isinstance(loaded, dict) else {}


def evaluate_command(
    checkpoint: Path = typer.Argument(..., help="A checkpoint from 'dsspn train'."),
    data: Optional[List[str]] = typer.Option(None, "--data", help="FORMAT=ROOT; repeat for "
                                             "several (default: the sample data)."),
    split: str = typer.Option("val", "--split"),
    json_file: Optional[Path] = typer.Option(None, "--json", help="Write the scores here."),
    device: str = typer.Option("auto", "--device"),
    per_class: bool = typer.Option(False, "--per-class", help="Print every class's IoU."),
    labels_out: Optional[Path] = typer.Option(None, "--labels-out", help="Also write each "
                                              "prediction as <DIR>/<dataset>/<key>_labelIds"
                                              ".png (the Cityscapes submission format)."),
):
    """Mean IoU, pixel accuracy, mean class accuracy, per class and per tree level, with
    hierarchical prediction restricted to each dataset's concepts."""
    from rich.console import Console
    from rich.progress import track
    from rich.table import Table

    from dsspn_cli.data.dataset import SegmentationDataset
    from dsspn_cli.engine.checkpoint import load_model
    from dsspn_cli.engine.evaluate import evaluate
    from dsspn_cli.engine.train import SAMPLE_FORMATS, sample_data_root, setup_world
    from dsspn_cli.io import atomic_write_text

    world = setup_world(device)
    model, table, _, _ = load_model(checkpoint, world.device)
    sets = parse_data(data) or {fmt: str(sample_data_root() / folder)
                                for fmt, folder in SAMPLE_FORMATS.items()}
    console = Console()
    err = Console(stderr=True)

    def bar(items, total, what):
        return track(items, total=total, description=what, console=err, transient=True)

    results = {}
    for fmt, root in sets.items():
        dataset = SegmentationDataset(root, fmt, split, table)
        results[dataset.name] = evaluate(
            model, dataset, world.device, track=bar,
            labels_out=labels_out / dataset.name if labels_out else None)
    summary = Table("dataset", "images", "mIoU", "pixel acc", "mean acc", "IoU per tree level",
                    title=f"{checkpoint} on {split}", title_justify="left")
    for name, scores in results.items():
        levels = ", ".join(f"{k}: {v:.1f}" for k, v in scores["iou_per_level"].items()
                           if v is not None and k != "0")
        summary.add_row(name, str(scores["images"]), _fmt(scores["mIoU"]),
                        _fmt(scores["pixel_acc"]), _fmt(scores["mean_acc"]), levels)
    console.print(summary)
    if per_class:
        for name, scores in results.items():
            table_ = Table("class", "IoU", "acc", "pixels", title=name, title_justify="left")
            for cls, row in scores["per_class"].items():
                table_.add_row(cls, _fmt(row["iou"]), _fmt(row["acc"]), str(row["pixels"]))
            console.print(table_)
    if json_file is not None:
        atomic_write_text(json_file, json.dumps(results, indent=1) + "\n")
        console.print(f"wrote {json_file}")


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.2f}"




def export_command(
    checkpoint: Path = typer.Argument(..., help="A checkpoint from 'dsspn train'."),
    fmt: str = typer.Option("onnx", "--format", help="onnx or torchscript."),
    output: Optional[Path] = typer.Option(None, "-o", "--output",
                                          help="Default: beside the checkpoint."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Predict in this dataset's "
                                          "label ids (default: the tree's concepts)."),
    level: Optional[int] = typer.Option(None, "--level", min=0),
    size: str = typer.Option("512x1024", "--size", help="Input size HEIGHTxWIDTH."),
):
    """Export hierarchical inference as one static graph (ONNX or TorchScript): input a
    normalised image batch, output the label map and the confidence."""
    from rich.console import Console

    from dsspn_cli.cli.data import _size
    from dsspn_cli.engine.export import export

    if fmt not in ("onnx", "torchscript"):
        raise UserError(f"--format {fmt}: use onnx or torchscript")
    suffix = ".onnx" if fmt == "onnx" else ".ts.pt"
    target = output or checkpoint.with_suffix(suffix)
    path = export(checkpoint, target, fmt, dataset, level, _size(size))
    Console().print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, input 1x3x{size})")


__all__ = ["train_command", "evaluate_command", "export_command", "parse_data"]
