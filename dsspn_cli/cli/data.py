"""``dsspn data ...``: built-in sample data, and checks and statistics of datasets on disk."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from dsspn_cli.errors import UserError

app = typer.Typer(help="Datasets: write the built-in sample data, check a dataset on disk, "
                  "see what the concept tree sees in it.", no_args_is_help=True,
                  add_completion=False)

FORMAT_HELP = ("Layout: cityscapes, ade, coco (PNG maps, else JSON), coco-json, mapillary, "
               "mapillary-v2, folder; held-out test sets: voc, pascal-context (59), "
               "pascal-context-60, camvid, kitti, wilddash, scannet.")
# The neurons an image activates on average in the paper (section 4.5), for comparison.
PAPER_NEURONS = {"coco": 6, "ade": 5, "cityscapes": 10, "mapillary": 8}


def _track():
    """Progress on stderr for the data layer's ``track`` hook."""
    from dsspn_cli.console import console, track

    err = console(stderr=True)

    def wrapped(items, total, what):
        return track(items, total, what, err, "images")
    return wrapped


def _size(text: str, least: int | None = 16,
          most: int | None = 4096 * 4096) -> tuple[int, int]:
    """HEIGHTxWIDTH, each side at least ``least``, at most ``most`` pixels in all (None: the
    caller checks)."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--size {text}: write it as HEIGHTxWIDTH, like 128x256") from None
    if least is not None and (height < least or width < least):
        raise UserError(f"--size {text}: at least {least}x{least}")
    if most is not None and height * width > most:
        raise UserError(f"--size {text}: at most {most:,} pixels, like 1024x2048")
    return height, width


@app.command()
def sample(
    out: Path = typer.Argument(..., help="Folder to write the datasets into."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same bytes."),
    images: int = typer.Option(16, "--images", min=1, help="Training images per dataset "
                               "(validation gets a quarter, at least 2)."),
    size: str = typer.Option("128x256", "--size", help="Image size, HEIGHTxWIDTH."),
):
    """Write small procedural datasets in the four real layouts (Cityscapes, ADE20K,
    COCO-Stuff with its JSON, Mapillary Vistas), labelled at each dataset's own granularity."""
    from dsspn_cli.console import add_row, console, table
    from dsspn_cli.data.sample import FOLDERS, check_size, write_sample_data

    dims = check_size(_size(size, least=None, most=None), "--size")   # the writer's bounds
    summary = write_sample_data(out, seed=seed, images=images, size=dims)
    splits = sorted({s for v in summary.values() for s in v})
    shown = table("dataset", "folder", *splits, title=f"sample data in {out}")
    for name, counts in summary.items():
        add_row(shown, name, out / FOLDERS[name], *(counts.get(s, 0) for s in splits))
    console().print(shown)


@app.command()
def check(
    root: Path = typer.Argument(..., help="The dataset's root folder."),
    fmt: str = typer.Option(..., "--format", help=FORMAT_HELP),
    split: Optional[List[str]] = typer.Option(None, "--split", help="Only these splits."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
):
    """Count images per split and find unreadable files, missing pairs, image/label size
    mismatches and label values the label set does not define. Exit 1 when any."""
    from dsspn_cli.console import add_row, console, styled, table
    from dsspn_cli.data.audit import check_dataset

    report = check_dataset(root, fmt, split or None, track=_track())
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=1) + "\n")
    else:
        out = console()
        counts = ", ".join(f"{s}: {n}" for s, n in report.counts.items())
        out.print(f"{report.root} ({report.format}): {counts}")
        if report.ok:
            out.print(styled(("clean", "green"), ": every image has a readable label map of "
                             "its size with values from the label set"))
        else:
            shown = table("file", "problem", title=f"{len(report.problems)} problems")
            for problem in report.problems:
                add_row(shown, problem.file, problem.problem)
            out.print(shown)
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def stats(
    root: Path = typer.Argument(..., help="The dataset's root folder."),
    fmt: str = typer.Option(..., "--format", help=FORMAT_HELP),
    tree_file: Optional[Path] = typer.Option(None, "--tree", help="Concept tree (default: the "
                                             "shipped four-dataset tree)."),
    split: str = typer.Option("train", "--split"),
    top: int = typer.Option(20, "--top", min=1, help="Concepts to list."),
    as_json: bool = typer.Option(False, "--json", help="Print the statistics as JSON."),
):
    """Pixel share per concept, and the average number of semantic neurons an image
    activates (the paper: 6 COCO-Stuff, 5 ADE20K, 10 Cityscapes, 8 Mapillary)."""
    from dsspn_cli.console import add_row, console, table
    from dsspn_cli.data.audit import dataset_stats
    from dsspn_cli.hierarchy.tables import MaskingTable
    from dsspn_cli.hierarchy.tree import load_tree

    masking = MaskingTable.from_tree(load_tree(tree_file))
    report = dataset_stats(root, fmt, masking, split=split, track=_track())
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=1) + "\n")
        return
    out = console()
    paper = PAPER_NEURONS.get(report.dataset)
    out.print(f"{report.root} ({report.dataset}, {split}): {report.images} images, "
                  f"{report.neurons_per_image:.1f} semantic neurons activated per image"
                  + (f" (paper: {paper})" if paper else "")
                  + f", {100 * report.ignored_share:.1f}% of pixels ignored")
    shown = table("concept", "pixel share", title=f"top {top} concepts")
    for name, share in list(report.pixel_share.items())[:top]:
        add_row(shown, name, f"{100 * share:.2f}%")
    out.print(shown)


@app.command()
def convert(
    root: Path = typer.Argument(..., help="The dataset's root folder."),
    fmt: str = typer.Option(..., "--format", help=FORMAT_HELP),
    to: str = typer.Option(..., "--to", help="The label set to write: a built-in name (voc, "
                           "camvid, cityscapes, ...) or a YAML/text label-set file."),
    out: Path = typer.Option(..., "-o", "--out", help="Folder to write the folder dataset "
                             "into (new, empty, or an earlier run of the same conversion)."),
    tree_file: Optional[Path] = typer.Option(None, "--tree", help="Concept tree (default: the "
                                             "shipped four-dataset tree)."),
    split: Optional[List[str]] = typer.Option(None, "--split", help="Only these splits "
                                              "(default: every split there)."),
    workers: int = typer.Option(4, "--workers", min=1, help="Threads reading and writing."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the report as "
                                            "JSON to this file."),
):
    """Write every label map of a dataset in another label set's ids, through the tree, as a
    folder dataset (images/<split>/, labels/<split>/, labels.yaml) that the other commands
    read with --format folder. A label goes to the target class that covers it (the deepest);
    a label coarser than the target, or with no target class, to the target's ignore value
    (or to its everything-else class, VOC's background); the report counts each's pixels."""
    from dsspn_cli.console import add_row, console, table
    from dsspn_cli.data.convert import convert_dataset

    report = convert_dataset(root, fmt, to, out, tree_file, split or None, workers, json_out,
                             track=_track())
    shown = console()
    shown.print(f"{report.root} ({report.format}) written in the ids of {report.target}: "
                f"{report.out}")
    splits = table("split", "images", "skipped: no label map", "skipped: no image",
                   title="images written")
    for name, counts in report.splits.items():
        add_row(splits, name, counts["images"], counts["no_label_map"], counts["no_image"])
    shown.print(splits)
    total = report.pixels or 1

    def share(pixels: int) -> str:
        return f"{100 * pixels / total:.2f}%"
    labels = table("id", "label", "concept", "pixels", "share", "to",
                   title=f"where each {report.source} label went")
    quiet = 0
    for route in report.routes:
        if not route.pixels:
            quiet += 1
            continue
        add_row(labels, route.id, route.name, ", ".join(route.concepts) or "-",
                f"{route.pixels:,}", share(route.pixels), route.text())
    shown.print(labels)
    if quiet:
        shown.print(f"{quiet} labels of {report.source} have no pixels here"
                    + (" (all are in the JSON report)" if json_out else ""))
    ignored = report.ignored()
    reasons = {}
    for route in report.routes:
        if route.to is None and route.pixels:
            key = route.reason()
            reasons[key] = reasons.get(key, 0) + route.pixels
    shown.print(f"{report.pixels:,} pixels: {share(report.pixels - ignored)} written as "
                f"{report.target} classes, {share(ignored)} as its ignore value "
                f"{report.target_ignore}"
                + (" (" + ", ".join(f"{why} {share(n)}" for why, n in
                                    sorted(reasons.items(), key=lambda kv: -kv[1])) + ")"
                   if reasons else ""))
    if report.unreached:
        most = 12
        shown.print(f"{len(report.unreached)} {report.target} classes no {report.source} label "
                    f"goes to: " + ", ".join(report.unreached[:most])
                    + (", ..." if len(report.unreached) > most else ""))
