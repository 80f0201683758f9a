"""``dsspn evaluate``: parses its options, prints the report. The work is
``dsspn_cli.engine.scoring.evaluate_checkpoint``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from dsspn_cli.cli.options import parse_data
from dsspn_cli.cli.predict import MODEL_HELP, chosen_model
from dsspn_cli.engine.config import MIN_TILE, TILE
from dsspn_cli.errors import UserError


def parse_labelsets(values: list[str] | None, data: dict[str, str]) -> dict[str, str]:
    """``--labelset FILE`` (with one ``--data``) or ``--labelset FORMAT=FILE`` (the dataset
    of that ``--data``) -> {format: file}."""
    from dsspn_cli.data.formats import canonical

    found: dict[str, str] = {}
    for value in values or []:
        fmt, _, path = value.partition("=")
        key = canonical(fmt)
        fmt = key or fmt.lower()
        if path and fmt in data:
            pair = fmt, path
        elif path and key is not None:
            raise UserError(f"--labelset {value}: no --data {fmt}=ROOT to read with it; give "
                            f"the dataset, or the label set of one of "
                            f"{', '.join(data) or 'the --data given'}")
        elif len(data) == 1:
            pair = next(iter(data)), value
        elif not data:
            raise UserError(f"--labelset {value}: reads the label maps of a --data; give the "
                            "dataset it labels: --data FORMAT=ROOT")
        else:
            raise UserError(f"--labelset {value}: with several --data, say whose label set "
                            "it is: --labelset FORMAT=FILE, FORMAT one of "
                            f"{', '.join(data) or 'the --data given'}")
        if pair[0] in found:
            raise UserError(f"--labelset {value}: {pair[0]} has a label set already")
        found[pair[0]] = pair[1]
    return found


def evaluate_command(
    checkpoint: Optional[Path] = typer.Argument(None, help=MODEL_HELP, show_default=False),
    model: Optional[Path] = typer.Option(None, "--model", help="The same, as an option."),
    data: Optional[List[str]] = typer.Option(None, "--data", help="FORMAT=ROOT; repeat for "
                                             "several (default: the sample data)."),
    labelset: Optional[List[str]] = typer.Option(
        None, "--labelset", help="Read the dataset's label maps in this label set (YAML or "
        "text) and score it zero-shot in its classes: FILE with one --data, FORMAT=FILE "
        "with several."),
    split: Optional[str] = typer.Option(None, "--split", help="Default: val; a held-out "
                                        "test set's own (camvid: test, kitti: train)."),
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
    hedge: bool = typer.Option(False, "--hedge", help="Also the accuracy-specificity curve "
                               "of hedged prediction per dataset (each pixel stops at the "
                               "deepest concept whose confidence exceeds a threshold, over a "
                               "sweep of it): printed at target accuracies, in --json, and "
                               "saved as the checkpoint's calibration for 'dsspn predict "
                               "--hedge TARGET'."),
    calibration: Optional[Path] = typer.Option(None, "--calibration", help="With --hedge: "
                                               "save the calibration here (default: beside "
                                               "the checkpoint, CKPT.hedging.json)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="With --hedge: draw the "
                                        "curves as a PNG, a panel per dataset."),
    compare: Optional[List[Path]] = typer.Option(None, "--compare", help="With --plot: draw "
                                                 "the curves of an earlier 'evaluate --hedge "
                                                 "--json' output beside these; repeat for "
                                                 "several checkpoints."),
):
    """Mean IoU, pixel accuracy, mean class accuracy, per class and per tree level, with
    hierarchical prediction restricted to each dataset's concepts; a dataset outside the
    model's tree (VOC, CamVid, your own labels) zero-shot in its own classes; with several,
    their harmonic mean. Under torchrun --nproc_per_node N each process scores its share of
    the images. --hedge: the accuracy-specificity curve of hedged prediction, and its
    calibration."""
    from dsspn_cli.console import add_row, console, table, track
    from dsspn_cli.engine.scoring import evaluate_checkpoint

    checkpoint = chosen_model(checkpoint, model)
    sets = parse_data(data)
    err = console(stderr=True)

    def bar(items, total, what):
        return track(items, total, what, err, "images")

    report = evaluate_checkpoint(
        checkpoint, sets or None, split, labelsets=parse_labelsets(labelset, sets),
        device=device, precision=precision, tile=tile, workers=workers,
        labels_out=labels_out, json_file=json_file, track=bar, hedge=hedge,
        calibration_file=calibration, plot_file=plot, compare=compare or ())
    if not report.main:                # under torchrun, rank 0 speaks for the job
        return
    out = console()
    summary = table(*report.columns(), title=report.title())
    for row in report.rows():
        add_row(summary, *row)
    out.print(summary)
    for line in report.notes():
        out.print(line)
    rows = report.curve_rows()
    if rows:
        from dsspn_cli.engine.hedging import CURVE_COLUMNS

        curves = table(*CURVE_COLUMNS, title="hedged prediction: the smallest threshold "
                       "reaching each accuracy on these images")
        for row in rows:
            add_row(curves, *row)
        out.print(curves)
    if per_class:
        for name in report.results:
            classes = table(*report.class_columns(name), title=name)
            for row in report.class_rows(name):
                add_row(classes, *row)
            out.print(classes)
    for path in (report.json_file, report.calibration_file, report.plot_file):
        if path is not None:
            out.print(f"wrote {path}")


__all__ = ["evaluate_command", "parse_labelsets"]
