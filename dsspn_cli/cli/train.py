"""``dsspn train``, ``dsspn evaluate`` and ``dsspn export``: thin wrappers over
dsspn_cli.engine. ``train``'s options come from the training config's schema."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List, Optional

import typer

from dsspn_cli.cli.options import with_settings
from dsspn_cli.cli.predict import MODEL_HELP, chosen_model
from dsspn_cli.engine.config import MIN_TILE, TILE, TrainConfig
from dsspn_cli.errors import UserError


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


def _train(
    data: Optional[List[str]] = typer.Option(None, "--data", help="FORMAT=ROOT, repeat for "
                                             "joint training (default: the sample data)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML with any of these "
                                          "settings; options given here override it."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out with its "
                                "own config.yaml (options given here override it)."),
    settings: dict | None = None,
    assignments: list[str] | None = None,
    flags: dict | None = None,
):
    """Train a DSSPN (or the flat baseline, --head flat) on one dataset or several jointly;
    torchrun --nproc_per_node N -m dsspn_cli train ... for several processes."""
    from dsspn_cli.console import console as make_console
    from dsspn_cli.engine.config import resolve_config
    from dsspn_cli.engine.train import train

    settings = dict(settings or {})
    settings["data"] = parse_data(data) or None
    out = Path(settings.get("out") or TrainConfig.model_fields["out"].default)
    if resume and config is None and (out / "config.yaml").is_file():
        config = out / "config.yaml"          # continue with the settings the run had
    resolved, demo = resolve_config(config, settings, assignments, {**(flags or {}),
                                                                     "data": "--data"})
    _check_config_file(config, Path(resolved.out), resume)
    console = make_console(stderr=True)
    if demo:
        console.print("no --data: training on the built-in sample data with CPU demo "
                      "settings (" + ", ".join(f"{k} {v}" for k, v in demo.items())
                      + "); options override them")
    result = train(resolved, resume=resume, console=console)
    if result.get("rank", 0) != 0:      # under torchrun, rank 0 speaks for the job
        return
    if result.get("already_finished"):
        console.print(f"the run in {result['run']} is already finished at step "
                      f"{result['step']}; nothing to do (a larger --iters trains it further)")
        return
    loss = (f", loss {result['loss']:.4f}" if "loss" in result else
            " (the starting weights, not trained)")          # --iters 0
    console.print(f"done: step {result.get('step')}{loss}, best validation mIoU "
                  f"{max(result.get('best_mIoU', -1), 0):.2f}; "
                  f"run folder {result['run']} (checkpoints/last.pt, best.pt, metrics.jsonl, "
                  "curves.png)")


def _check_config_file(config: Path | None, out: Path, resume: bool) -> None:
    """The config file is an input: the run folder may not hold it, since train writes its
    resolved config.yaml there (and a new run's files beside it); but for the run's own
    config.yaml, which a resumed run replaces with the config it now runs."""
    from dsspn_cli.engine.run import FILES
    from dsspn_cli.files import check_output

    own = out / "config.yaml"
    if config is None or (resume and own.is_file() and os.path.samefile(config, own)):
        return
    check_output(out, folder=True, inputs=[config], writes=FILES)


train_command = with_settings(_train, TrainConfig)


def evaluate_command(
    checkpoint: Optional[Path] = typer.Argument(None, help=MODEL_HELP, show_default=False),
    model: Optional[Path] = typer.Option(None, "--model", help="The same, as an option."),
    data: Optional[List[str]] = typer.Option(None, "--data", help="FORMAT=ROOT; repeat for "
                                             "several (default: the sample data)."),
    split: str = typer.Option("val", "--split"),
    json_file: Optional[str] = typer.Option(None, "--json", help="Write the scores here."),
    device: str = typer.Option("auto", "--device"),
    per_class: bool = typer.Option(False, "--per-class", help="Print every class's IoU."),
    labels_out: Optional[Path] = typer.Option(None, "--labels-out", help="Also write each "
                                              "prediction as <DIR>/<dataset>/<key>_labelIds"
                                              ".png (the Cityscapes submission format)."),
    tile: int = typer.Option(TILE, "--tile", help=f"Largest tile side in pixels (at least "
                             f"{MIN_TILE}); larger images run in overlapping tiles, as in "
                             "'dsspn predict'."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, bf16, fp16 (CUDA) or "
                                  "auto (bf16 where the GPU has it)."),
    workers: int = typer.Option(2, "--workers", min=0, help="Processes decoding images."),
):
    """Mean IoU, pixel accuracy, mean class accuracy, per class and per tree level, with
    hierarchical prediction restricted to each dataset's concepts; under torchrun
    --nproc_per_node N each process scores its share of the images."""
    from dsspn_cli.console import add_row, console, track
    from dsspn_cli.console import table as new_table
    from dsspn_cli.data.dataset import SegmentationDataset
    from dsspn_cli.data.sample import sample_datasets
    from dsspn_cli.engine.checkpoint import load_model
    from dsspn_cli.engine.evaluate import evaluate, label_file
    from dsspn_cli.engine.world import resolve_precision, setup_world, teardown_world
    from dsspn_cli.files import atomic_write_text, check_output

    if tile < MIN_TILE:
        raise UserError(f"--tile {tile}: tiles must be at least {MIN_TILE} pixels")
    checkpoint = chosen_model(checkpoint, model)
    sets = parse_data(data) or sample_datasets()
    reads = [checkpoint, *sets.values()]
    if json_file is not None:           # before the work: a bad path is told at once
        json_file = check_output(json_file, inputs=reads)
    if labels_out is not None:
        check_output(labels_out, folder=True, inputs=reads)
    world = setup_world(device)
    try:
        resolve_precision(precision, world.device)      # a bad choice fails before any work
        model, table, _, _ = load_model(checkpoint, world.device)
        datasets = [SegmentationDataset(root, fmt, split, table) for fmt, root in sets.items()]
        if labels_out is not None:      # every file to write, now that they are known
            check_output(labels_out, folder=True, inputs=reads, writes=[
                label_file(d, sample.key) for d in datasets for sample in d.samples])
        err = console(stderr=True)

        def bar(items, total, what):
            return track(items, total, what, err, "images") if world.main else items

        results = {}
        for dataset in datasets:
            results[dataset.name] = evaluate(
                model, dataset, world, track=bar, tile=tile, precision=precision,
                workers=workers, labels_out=labels_out)
    finally:
        teardown_world(world)
    if not world.main:                 # under torchrun, rank 0 speaks for the job
        return
    out = console()
    summary = new_table("dataset", "images", "mIoU", "pixel acc", "mean acc",
                        "IoU per tree level", title=f"{checkpoint} on {split}")
    for name, scores in results.items():
        levels = ", ".join(f"{k}: {v:.1f}" for k, v in scores["iou_per_level"].items()
                           if v is not None and k != "0")
        add_row(summary, name, scores["images"], _fmt(scores["mIoU"]),
                _fmt(scores["pixel_acc"]), _fmt(scores["mean_acc"]), levels)
    out.print(summary)
    if per_class:
        for name, scores in results.items():
            table_ = new_table("class", "IoU", "acc", "pixels", title=name)
            for cls, row in scores["per_class"].items():
                add_row(table_, cls, _fmt(row["iou"]), _fmt(row["acc"]), row["pixels"])
            out.print(table_)
    if json_file is not None:
        atomic_write_text(json_file, json.dumps(results, indent=1) + "\n")
        out.print(f"wrote {json_file}")


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.2f}"




def export_command(
    checkpoint: Optional[Path] = typer.Argument(None, help=MODEL_HELP, show_default=False),
    model: Optional[Path] = typer.Option(None, "--model", help="The same, as an option."),
    fmt: str = typer.Option("onnx", "--format", help="onnx or torchscript."),
    output: Optional[str] = typer.Option(None, "-o", "--output",
                                         help="Default: beside the checkpoint."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Predict in this dataset's "
                                          "label ids (default: the tree's concepts)."),
    level: Optional[int] = typer.Option(None, "--level", min=0),
    size: str = typer.Option("512x1024", "--size", help="Input size HEIGHTxWIDTH."),
):
    """Export hierarchical inference as one static graph (ONNX or TorchScript): input a
    normalised image batch, output the label map and the confidence."""
    from dsspn_cli.cli.data import _size
    from dsspn_cli.console import console
    from dsspn_cli.engine.export import export
    from dsspn_cli.files import check_output

    checkpoint = chosen_model(checkpoint, model)
    if fmt not in ("onnx", "torchscript"):
        raise UserError(f"--format {fmt}: use onnx or torchscript")
    suffix = ".onnx" if fmt == "onnx" else ".ts.pt"
    target = check_output(output or checkpoint.with_suffix(suffix), inputs=[checkpoint])
    path = export(checkpoint, target, fmt, dataset, level, _size(size))
    console().print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, input 1x3x{size})")


__all__ = ["train_command", "evaluate_command", "export_command", "parse_data"]
