"""``dsspn evaluate``'s work: a checkpoint scored on datasets, and the report of it.

``evaluate_checkpoint`` checks the options and outputs, joins the processes torchrun started
(each scores its share of the images, the counts summed exactly), loads the model once and
scores every dataset: one of the model's tree as training validates it (``evaluate``:
hierarchical prediction restricted to its concepts), any other zero-shot, in its own classes
through the vocabulary mapping (``zeroshot``). ``EvaluationReport`` holds the scores and lays
out what the command prints and writes: a row per dataset, with several a summary row of
harmonic means (MSeg's headline over its held-out test sets), and the JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from dsspn_cli.engine.config import TILE
from dsspn_cli.engine.infer import Track, no_track
from dsspn_cli.errors import UserError

SUMMARY = "harmonic_mean"        # the JSON key of the summary, beside the datasets' names
MEANS = ("mIoU", "mIoU_named", "pixel_acc", "mean_acc")


def harmonic_mean(values) -> float | None:
    """The harmonic mean of percentages: 0 when one is 0, None when one is missing."""
    values = list(values)
    if not values or any(v is None for v in values):
        return None
    if any(v <= 0 for v in values):
        return 0.0
    return len(values) / sum(1.0 / v for v in values)


@dataclass
class EvaluationReport:
    """The scores of one checkpoint on its datasets, by dataset name (each as its JSON), the
    split each was scored on, and whether this process speaks for the job (under torchrun
    rank 0 does; the others' reports are not shown)."""

    checkpoint: Path
    results: dict[str, dict] = field(default_factory=dict)
    splits: dict[str, str] = field(default_factory=dict)
    main: bool = True
    json_file: Path | None = None
    calibration_file: Path | None = None      # written with --hedge
    plot_file: Path | None = None

    def curves(self) -> dict[str, dict]:
        """The hedging curves, by dataset (``evaluate --hedge``: the datasets of the tree)."""
        return {name: scores["hedging"] for name, scores in self.results.items()
                if "hedging" in scores}

    def curve_rows(self) -> list[tuple[str, ...]]:
        from dsspn_cli.engine.hedging import curve_rows

        return [row for name, curve in self.curves().items() for row in curve_rows(name, curve)]

    @property
    def zero_shot(self) -> bool:
        return any(scores.get("zero_shot") for scores in self.results.values())

    def summary(self) -> dict | None:
        """Harmonic means over the datasets, with several (the named mIoU of a dataset of
        the tree is its mIoU: it names every class)."""
        if len(self.results) < 2:
            return None
        doc: dict = {"datasets": list(self.results)}
        for key in MEANS:
            doc[key] = harmonic_mean(scores.get(key, scores.get("mIoU"))
                                     for scores in self.results.values())
        return doc

    def to_json(self) -> dict:
        doc = dict(self.results)
        summary = self.summary()
        if summary is not None:
            doc[SUMMARY] = summary
        return doc

    def title(self) -> str:
        splits = set(self.splits.values())
        where = (next(iter(splits)) if len(splits) == 1 else
                 ", ".join(f"{name} {split}" for name, split in self.splits.items()))
        return f"{self.checkpoint} on {where}"

    def columns(self) -> tuple[str, ...]:
        if not self.zero_shot:
            return ("dataset", "images", "mIoU", "pixel acc", "mean acc", "IoU per tree level")
        return ("dataset", "images", "mIoU", "named mIoU", "pixel acc", "mean acc",
                "IoU per tree level", "cannot name")

    def rows(self) -> list[tuple[str, ...]]:
        """A row per dataset, and the summary row with several."""
        zero_shot = self.zero_shot
        rows = []
        for name, scores in self.results.items():
            levels = ", ".join(f"{k}: {v:.1f}" for k, v in scores["iou_per_level"].items()
                               if v is not None and k != "0")
            if scores.get("zero_shot"):
                levels = "zero-shot"
            row = [name, str(scores["images"]), _fmt(scores["mIoU"])]
            if zero_shot:
                row.append(_fmt(scores.get("mIoU_named", scores["mIoU"])))
            row += [_fmt(scores["pixel_acc"]), _fmt(scores["mean_acc"]), levels]
            if zero_shot:
                row.append(_cannot(scores))
            rows.append(tuple(row))
        summary = self.summary()
        if summary is not None:
            row = ["harmonic mean", str(sum(s["images"] for s in self.results.values())),
                   _fmt(summary["mIoU"])]
            if zero_shot:
                row.append(_fmt(summary["mIoU_named"]))
            row += [_fmt(summary["pixel_acc"]), _fmt(summary["mean_acc"]), ""]
            if zero_shot:
                row.append("")
            rows.append(tuple(row))
        return rows

    def notes(self) -> list[str]:
        """What the rows do not say: the everything-else class of a zero-shot dataset, and
        each class the model cannot name or tell apart, with the fix."""
        lines = []
        for name, scores in self.results.items():
            if self.calibration_file is not None and "hedging" not in scores:
                lines.append(f"{name}: no hedging curve: a zero-shot dataset's classes are "
                             "not concepts of the tree to climb")
            if not scores.get("zero_shot"):
                continue
            if scores["everything_else"] is not None:
                lines.append(f"{name}: '{scores['everything_else']}' is everything else: the "
                             "pixels predicted as none of its other classes")
            cannot = len(scores["unnamed"]) + len(scores["shared"])
            if cannot:
                lines.append(f"{name}: mIoU counts the {cannot} class"
                             f"{'es' if cannot > 1 else ''} the model cannot name or tell "
                             "apart as 0 (named mIoU leaves them out):")
                lines += [f"  {problem['message']}" for problem in scores["problems"]]
        return lines

    def class_columns(self, name: str) -> tuple[str, ...]:
        if self.results[name].get("zero_shot"):
            return ("class", "IoU", "acc", "pixels", "named", "concepts")
        return ("class", "IoU", "acc", "pixels")

    def class_rows(self, name: str) -> list[tuple[str, ...]]:
        rows = []
        for cls, row in self.results[name]["per_class"].items():
            cells = [cls, _fmt(row["iou"]), _fmt(row["acc"]), str(row["pixels"])]
            if "how" in row:
                how = row["how"] + (f", {row['problem']}: counted 0" if row["problem"] else "")
                cells += [how, ", ".join(row["concepts"]) or "-"]
            rows.append(tuple(cells))
        return rows


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _cannot(scores: dict) -> str:
    if not scores.get("zero_shot"):
        return "-"
    parts = [f"{len(scores[kind])} {kind}" for kind in ("unnamed", "shared") if scores[kind]]
    return ", ".join(parts) or "-"


def split_of(fmt, split: str | None) -> str:
    """The split scored: the one given, else a held-out test set's own (CamVid's test,
    KITTI's train...), else val."""
    if split is not None:
        return split
    return fmt.test_split if fmt.held_out else "val"


def evaluate_checkpoint(checkpoint, data: dict[str, str] | None = None,
                        split: str | None = None, *, labelsets: dict | None = None,
                        device: str = "auto", precision: str = "fp32", tile: int = TILE,
                        workers: int = 2, labels_out=None, json_file=None,
                        track: Track = no_track, wn=None, hedge: bool = False,
                        calibration_file=None, plot_file=None,
                        compare=()) -> EvaluationReport:
    """Score ``checkpoint`` on ``data`` ({format: root}; default: the sample data's four
    training datasets) and write the JSON to ``json_file`` (rank 0).

    ``split``: the split of every dataset (default ``split_of``). ``labelsets``: {format:
    label-set file} for datasets read in another label set than their layout's (any layout,
    and a ``folder`` without its own file); such a dataset is scored zero-shot, as is any
    whose label set is not one of the model's tree. ``labels_out``: each prediction as a PNG
    of the dataset's ids (``evaluate.label_file``). ``track(items, total, what)``: progress,
    shown by rank 0 alone. ``wn``: a WordNet reader (None: loaded when a class needs it).

    ``hedge``: also each tree dataset's accuracy-specificity curve of hedged prediction
    (``hedging``), from the same forward passes, saved as the checkpoint's calibration in
    ``calibration_file`` (default: beside it, ``hedging.calibration_path``); ``plot_file``:
    the curves as a PNG, with those of ``compare`` (earlier ``--json`` outputs) beside."""
    from dsspn_cli.data.dataset import SegmentationDataset
    from dsspn_cli.data.formats import check_root, get_format, labelset_for
    from dsspn_cli.data.sample import sample_datasets
    from dsspn_cli.engine.checkpoint import load_model
    from dsspn_cli.engine.evaluate import evaluate, label_file
    from dsspn_cli.engine.hedging import (
        calibration,
        calibration_path,
        curve_label,
        curves_png,
        read_curves,
    )
    from dsspn_cli.engine.options import check_options
    from dsspn_cli.engine.world import setup_world, teardown_world
    from dsspn_cli.engine.zeroshot import HeldOutClasses, evaluate_zero_shot
    from dsspn_cli.files import atomic_write_bytes, atomic_write_text, check_output
    from dsspn_cli.hierarchy.labelset import load_labelset

    check_options(tile=tile, device=device, precision=precision)
    sets = dict(data or sample_datasets())
    labelsets = dict(labelsets or {})
    for fmt in labelsets:
        if fmt not in sets:
            raise UserError(f"--labelset {fmt}=...: no --data {fmt}=ROOT to read with it; give "
                            f"the dataset, or the label set of one of {', '.join(sets)}")
    reads = [checkpoint, *sets.values(), *labelsets.values()]
    if json_file is not None:           # before the work: a bad path is told at once
        json_file = check_output(json_file, inputs=reads)
    if labels_out is not None:
        check_output(labels_out, folder=True, inputs=reads)
    if not hedge and (plot_file is not None or compare or calibration_file is not None):
        raise UserError("--plot, --compare and --calibration go with --hedge: add it")
    if compare and plot_file is None:
        raise UserError("--compare draws earlier curves beside these: give --plot FILE.png")
    earlier = [read_curves(path) for path in compare]
    if hedge:
        reads += list(compare)
        calibration_file = check_output(calibration_file or calibration_path(checkpoint),
                                        inputs=reads)
        if plot_file is not None:
            plot_file = check_output(plot_file, inputs=reads)
    given = {fmt: load_labelset(str(path)) for fmt, path in labelsets.items()}
    world = setup_world(device)
    report = EvaluationReport(Path(checkpoint), main=world.main, json_file=json_file,
                              calibration_file=calibration_file, plot_file=plot_file)
    try:
        model, table, tree, config = load_model(checkpoint, world.device)
        jobs = []
        for fmt, root in sets.items():
            layout = get_format(fmt)
            labelset = given.get(fmt) or labelset_for(layout, check_root(Path(root)))
            # A dataset of the model's tree is scored as training validates it; another,
            # or one read in a label set given here, zero-shot in its own classes.
            trained = fmt not in given and labelset.name in table.datasets
            dataset = SegmentationDataset(root, fmt, split_of(layout, split),
                                          table if trained else None, labelset=labelset)
            if dataset.name in report.splits or dataset.name == SUMMARY:
                raise UserError(f"--data {fmt}={root}: a second dataset named "
                                f"'{dataset.name}'; score it on its own")
            report.splits[dataset.name] = dataset.split
            jobs.append((dataset, None if trained else HeldOutClasses(tree, labelset, wn)))
        if labels_out is not None:      # every file to write, now that they are known
            check_output(labels_out, folder=True, inputs=reads, writes=[
                label_file(d, sample.key) for d, _ in jobs for sample in d.samples])
        shown = track if world.main else no_track
        common = dict(track=shown, tile=tile, precision=precision, workers=workers,
                      labels_out=labels_out)
        for dataset, classes in jobs:
            scores = (evaluate(model, dataset, world, hedge=hedge, **common) if classes is None
                      else evaluate_zero_shot(model, dataset, classes, world, **common))
            if "hedging" in scores:     # who drew it, for plots of several checkpoints
                scores["hedging"].update(checkpoint=str(checkpoint), head=config.head.type)
            report.results[dataset.name] = {**scores, "split": dataset.split}
    finally:
        teardown_world(world)
    if world.main and json_file is not None:
        atomic_write_text(json_file, json.dumps(report.to_json(), indent=1) + "\n")
    curves = report.curves()
    if world.main and curves:
        atomic_write_text(calibration_file, json.dumps(calibration(
            checkpoint, curves, {name: report.splits[name] for name in curves})) + "\n")
    elif hedge:
        report.calibration_file = None          # nothing to calibrate on: nothing written
    if world.main and plot_file is not None and curves:
        atomic_write_bytes(plot_file, curves_png(
            [(curve_label(curves), curves)] + earlier))
    elif plot_file is not None:
        report.plot_file = None
    return report


__all__ = ["EvaluationReport", "evaluate_checkpoint", "harmonic_mean", "split_of", "SUMMARY"]
