"""``dsspn train`` and ``dsspn export``: thin wrappers over dsspn_cli.engine. ``train``'s
options come from the training config's schema."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer

from dsspn_cli.cli.options import parse_data, with_settings
from dsspn_cli.cli.predict import MODEL_HELP, chosen_model
from dsspn_cli.engine.config import TrainConfig
from dsspn_cli.errors import UserError


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


def export_command(
    checkpoint: Optional[Path] = typer.Argument(None, help=MODEL_HELP, show_default=False),
    model: Optional[Path] = typer.Option(None, "--model", help="The same, as an option."),
    fmt: str = typer.Option("onnx", "--format", help="onnx or torchscript."),
    output: Optional[str] = typer.Option(None, "-o", "--output",
                                         help="Default: beside the checkpoint."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Predict in this dataset's "
                                          "label ids (default: the tree's concepts)."),
    classes: Optional[str] = typer.Option(None, "--classes", help="Only these, comma-"
                                          "separated, as in 'dsspn predict': ids 0, 1, 2... "
                                          "(other 255)."),
    labelset: Optional[Path] = typer.Option(None, "--labelset", help="Only the classes of "
                                            "this label set, in its ids (other: its ignore "
                                            "value)."),
    level: Optional[int] = typer.Option(None, "--level", min=0),
    size: str = typer.Option("512x1024", "--size", help="Example input size HEIGHTxWIDTH to "
                             "trace with; the file takes any batch and size."),
    hedge_threshold: Optional[float] = typer.Option(
        None, "--hedge-threshold", help="Hedged prediction at this fixed confidence (0 to 1; "
        "'dsspn evaluate --hedge' gives the one for a target accuracy): each pixel stops "
        "at the deepest concept whose confidence exceeds it, a third output 'concepts'."),
):
    """Export hierarchical inference as one static graph (ONNX or TorchScript): input a
    normalised image batch of any size, output the label map and the confidence; the file's
    metadata holds the normalisation and the id and name of every label."""
    from dsspn_cli.cli.data import _size
    from dsspn_cli.console import console
    from dsspn_cli.engine.export import export
    from dsspn_cli.files import check_output

    checkpoint = chosen_model(checkpoint, model)
    if fmt not in ("onnx", "torchscript"):
        raise UserError(f"--format {fmt}: use onnx or torchscript")
    suffix = ".onnx" if fmt == "onnx" else ".ts.pt"
    reads = [checkpoint] + ([labelset] if labelset is not None else [])
    target = check_output(output or checkpoint.with_suffix(suffix), inputs=reads)
    path = export(checkpoint, target, fmt, dataset, level, _size(size), classes, labelset,
                  hedge_threshold)
    what = ("the chosen classes' ids" if classes or labelset else
            "label ids" if dataset else "concept ids")
    if hedge_threshold is not None:
        what += f" hedged at {hedge_threshold:g}, and the concept each pixel stopped at"
    console().print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB; input N x 3 x H x "
                    f"W, any batch and size; output {what}; normalisation and labels in its "
                    "metadata)")


__all__ = ["train_command", "export_command", "parse_data"]
