"""``dsspn hierarchy ...``: merge label sets into a concept tree, show it, check it, build tables.

These commands never import torch.
"""

from __future__ import annotations

import enum
import json
import shlex
import sys
from pathlib import Path
from typing import List, Optional

import typer

from dsspn_cli.errors import UserError, one_line

app = typer.Typer(help="Concept trees: merge label sets, show, check, and build masking tables.",
                  no_args_is_help=True, add_completion=False)

TREE_ARG = typer.Argument(None, help="Tree file (YAML, or node-link JSON from 'show --format "
                          "json'). Default: the shipped four-dataset tree.", show_default=False)


class ShowFormat(str, enum.Enum):
    tree = "tree"
    yaml = "yaml"
    json = "json"
    png = "png"
    html = "html"


def _console(stderr: bool = False):
    from dsspn_cli.console import console

    return console(stderr=stderr)


def _tree_path(tree_file: Path | None) -> Path:
    from dsspn_cli.resources import default_tree_path

    return tree_file or default_tree_path()


@app.command()
def merge(
    datasets: List[str] = typer.Argument(..., help="Label sets in order, the first is the "
                                         "skeleton: built-in names (coco, ade, cityscapes, "
                                         "mapillary, mapillary-v2) or YAML/text files."),
    output: str = typer.Option("concept-tree.yaml", "-o", "--output",
                               help="Where to write the tree (.yaml, or .json for node-link)."),
    max_depth: int = typer.Option(5, "--max-depth", min=1, help="Deepest level a concept may "
                                  "sit at (root = 0); the paper's tree reached 5."),
    wordnet_dir: Optional[Path] = typer.Option(None, "--wordnet-dir", help="A WordNet 3.0 "
                                               "database folder to use (default: found "
                                               "automatically)."),
    onto: Optional[Path] = typer.Option(None, "--onto", help="Place the label sets into this "
                                        "tree without moving any of its concepts, so that a "
                                        "model trained on it grows onto the new tree "
                                        "(dsspn train --grow-from)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="List where every label "
                                 "went (by default only the labels of label-set files and "
                                 "of sets merged --onto a tree)."),
):
    """Merge dataset label sets into one WordNet-backed concept tree."""
    from dsspn_cli.files import check_output
    from dsspn_cli.hierarchy.labelset import builtin_labelsets, load_labelset
    from dsspn_cli.hierarchy.merge import merge_labelsets
    from dsspn_cli.hierarchy.tree import load_tree
    from dsspn_cli.hierarchy.wordnet import wordnet

    base = load_tree(onto) if onto is not None else None
    labelsets = [load_labelset(ref) for ref in datasets]
    builtins = builtin_labelsets()
    output = check_output(output, inputs=[builtins.get(ls.source, ls.source) for ls in labelsets]
                          + [onto, wordnet_dir])
    wn = wordnet(wordnet_dir)
    tree, report = merge_labelsets(labelsets, wn, max_depth=max_depth,
                                   output_dir=output.parent, onto=base)
    # What was given, quoted as a shell would need it, so that the line can be run again
    # (a label-set file's own name is not a built-in one).
    given = (["--onto", str(onto)] if onto is not None else []) + list(datasets)
    header = ("# dsspn concept tree, merged with: dsspn hierarchy merge "
              + one_line(shlex.join(given)) + f" --max-depth {max_depth}\n"
              "# Each concept: name, WordNet 3.0 synset, labels (dataset: label ids mapped to it),"
              " children.\n# kind: wordnet marks the intermediate concepts the merge added.\n")
    tree.save(output, header=header)
    listed = {ls.name for ls in labelsets
              if verbose or onto is not None or ls.source.lower() not in builtins}
    _print_merge_summary(tree, report, output, listed)


def _print_merge_summary(tree, report, output: Path, listed: set[str] = frozenset()) -> None:
    """Counts per dataset; where each label of ``listed`` datasets went (label, synset,
    concept, parent, how placed); notes; and a warning for each label placed where a person
    should look (at the top of the tree, a guessed sense splitting another's label)."""
    from dsspn_cli.console import add_row, styled, table

    console = _console()
    fan_name, fanout = tree.largest_fanout()
    console.print(styled((str(len(tree)), "bold"), " concepts, ",
                         (str(len(tree.neurons)), "bold"), " semantic neurons, depth ",
                         (str(tree.height), "bold"), f" (limit {tree.max_depth}), largest "
                         "fan-out ", (str(fanout), "bold"), f" ({fan_name})"))
    placed_table = table("dataset", "labels", "placed", "new concepts", "joined others",
                         "explicit parent", title="labels placed per dataset")
    for rep in report.datasets:
        placed = sum(len(tree.labels(n).get(rep.name, [])) for n in tree.names)
        add_row(placed_table, rep.name, rep.labels, placed, rep.new_concepts, rep.joined,
                rep.explicit)
    console.print(placed_table)
    if report.intermediates:
        console.print(f"{len(report.intermediates)} WordNet concepts added as groups: "
                      + ", ".join(report.intermediates))
    if report.spliced:
        console.print(f"{len(report.spliced)} concepts without labels removed (one-child "
                      "groups, never-annotated labels): " + ", ".join(report.spliced))
    if report.others:
        console.print(f"{len(report.others)} '-other' concepts added beside a single child: "
                      + ", ".join(report.others))
    placed = [p for p in report.placements if p.dataset in listed]
    if placed:
        where = table("dataset", "id", "label", "synset", "concept", "parent", "how placed",
                      title=f"where the labels of {', '.join(sorted(listed))} went")
        for p in placed:
            synset = (p.synset or "-") + (" (by name)" if p.by_name else "")
            add_row(where, p.dataset, p.label_id, p.label, synset,
                    p.concept if p.concept != p.label else "=", p.parent or "-",
                    f"{p.how}: {p.detail}" if p.detail else p.how)
        console.print(where)
    for note in report.notes:
        console.print(styled(("note", "yellow"), f" {note}"))
    for warning in report.warnings:
        console.print(styled(("warning", "bold yellow"), f" {warning}"))
    console.print(f"wrote {output}")


@app.command()
def show(
    tree_file: Optional[Path] = TREE_ARG,
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Only the concepts this "
                                          "dataset labels, with their ancestors."),
    depth: Optional[int] = typer.Option(None, "--depth", min=0, help="Cut at this depth (html: "
                                        "the page opens folded at this depth, default 3)."),
    fmt: ShowFormat = typer.Option(ShowFormat.tree, "--format", help="tree (terminal), yaml, "
                                   "json (networkx node-link), png or html (a page that opens "
                                   "from disk: fold, unfold, search, details; png and html "
                                   "need -o)."),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Write to this file."),
):
    """Show a concept tree: in the terminal, as YAML or node-link JSON, drawn as PNG, or as
    an HTML page to fold, unfold and search."""
    from rich.text import Text

    from dsspn_cli.files import atomic_write_text, check_output
    from dsspn_cli.hierarchy import render
    from dsspn_cli.hierarchy.tree import load_tree

    if output is not None:
        output = check_output(output, inputs=[_tree_path(tree_file)])
    tree = load_tree(tree_file)
    if dataset is not None:
        dataset = tree.dataset_name(dataset)
        if not tree.concepts_of(dataset):
            raise UserError(f"--dataset {dataset}: labels no concept of this tree; merge it in "
                            "or choose another dataset")
    if fmt is ShowFormat.png:
        if output is None:
            raise UserError("--format png needs -o FILE.png")
        render.draw_png(tree, output, dataset, depth)
        _console().print(f"wrote {output}")
        return
    if fmt is ShowFormat.html:
        _write_page(tree, output, dataset, depth, tree_file)
        return
    if fmt is ShowFormat.tree:
        lines = render.tree_lines(tree, dataset, depth)
        if output is not None:
            atomic_write_text(output, "".join(line.plain + "\n" for line in lines))
            return
        _console().print(Text("\n").join(lines))
        return
    if dataset is not None or depth is not None:
        tree = render.subtree(tree, render.visible_concepts(tree, dataset, depth))
    text = (json.dumps(tree.to_node_link(), indent=1) + "\n" if fmt is ShowFormat.json
            else tree.to_yaml_text())
    if output is not None:
        atomic_write_text(output, text)
    else:
        sys.stdout.write(text)


def _write_page(tree, output, dataset: str | None, depth: int | None, tree_file) -> None:
    """``show --format html``: the whole tree (or a dataset's part of it), folded at
    ``depth``; a page keeps every level, so the depth is where it opens, not a cut."""
    from dsspn_cli.files import atomic_write_text
    from dsspn_cli.hierarchy import render
    from dsspn_cli.pages.tree import tree_page

    if output is None:
        raise UserError("--format html needs -o FILE.html")
    # A dataset's part keeps the whole tree's concept ids (a subtree would number anew).
    keep = render.visible_concepts(tree, dataset, None) if dataset is not None else None
    title = _tree_path(tree_file).name + (f" ({dataset})" if dataset else "")
    atomic_write_text(output, tree_page(tree, depth, title=title, keep=keep))
    _console().print(f"wrote {output}: {len(keep or tree.names)} concepts; open it in a "
                     "browser")


@app.command()
def check(
    tree_file: Optional[Path] = TREE_ARG,
    max_depth: Optional[int] = typer.Option(None, "--max-depth", min=0, help="Depth limit "
                                            "(default: the tree's own, 5 for merged trees)."),
    max_fanout: Optional[int] = typer.Option(None, "--max-fanout", min=1,
                                             help="Most children a concept may have "
                                                  "(default: no limit)."),
):
    """Check a tree: one root, no cycle, one parent each, every label mapped once, no
    single-child chains, depth and fan-out limits. Exit 0 when clean, 1 with a table."""
    from dsspn_cli.console import add_row, styled, table
    from dsspn_cli.hierarchy.check import check_graph
    from dsspn_cli.hierarchy.tree import read_graph

    path = _tree_path(tree_file)
    graph, datasets, tree_depth = read_graph(path)
    limit = max_depth if max_depth is not None else tree_depth
    violations = check_graph(graph, datasets, limit, max_fanout, tree_path=path)
    console = _console()
    if not violations:
        fanout = max((graph.out_degree(n) for n in graph), default=0)
        console.print(styled(("clean", "green"), f": {path}: {graph.number_of_nodes()} "
                             f"concepts, {sum(1 for n in graph if graph.out_degree(n) >= 2)} "
                             f"neurons, depth within {limit}, largest fan-out {fanout}, "
                             f"labels of {len(datasets)} datasets each mapped once"))
        return
    found = table("rule", "concept", "problem", title=f"{len(violations)} violations in {path}")
    for violation in violations:
        add_row(found, violation.rule, violation.concept, violation.message)
    console.print(found)
    raise typer.Exit(1)


@app.command()
def tables(
    tree_file: Optional[Path] = TREE_ARG,
    output: Path = typer.Option(..., "-o", "--output", help="Folder for tables.json and "
                                "summary.txt."),
):
    """Build the masking tables training uses: neurons and their children, label -> concept
    per dataset, concept masks, and each concept's path of (neuron, child) pairs."""
    from dsspn_cli.files import check_output
    from dsspn_cli.hierarchy.tables import MaskingTable
    from dsspn_cli.hierarchy.tree import labelset_of, load_tree

    check_output(output, folder=True, inputs=[_tree_path(tree_file)],
                 writes=("tables.json", "summary.txt"))
    tree = load_tree(tree_file)
    labelsets = {}
    for name, info in tree.datasets.items():
        try:
            labelsets[name] = labelset_of(tree.source, info, name)
        except UserError:
            pass     # label names are only for reading; the tree holds the mapping
    table = MaskingTable.from_tree(tree, labelsets)
    written = table.save(output)
    console = _console()
    console.print(table.summary().split("\n\nneuron")[0])
    console.print("wrote " + ", ".join(str(p) for p in written))


HOW_STYLES = {"same": "green", "below": "cyan", "coarser": "yellow", "none": "bold red"}
MAP_SHOWN = 6       # concepts listed per class in the table (JSON lists them all)


@app.command("map")
def map_classes(
    labelset: Optional[str] = typer.Argument(None, help="A label set whose labels to map: a "
                                             "built-in name or a YAML/text file.",
                                             show_default=False),
    classes: Optional[str] = typer.Option(None, "--classes", help="Classes to map instead, "
                                          "comma-separated: concept names, synsets "
                                          "(car.n.01) or WordNet words (canine, 'motor "
                                          "vehicle')."),
    tree_file: Optional[Path] = typer.Option(None, "--tree", help="Tree file (default: the "
                                             "shipped four-dataset tree)."),
    model: Optional[Path] = typer.Option(None, "--model", help="Map onto the tree inside this "
                                         "checkpoint instead (reading it needs torch)."),
    as_json: bool = typer.Option(False, "--json", help="Write the mapping as JSON."),
    wordnet_dir: Optional[Path] = typer.Option(None, "--wordnet-dir", help="A WordNet 3.0 "
                                               "database folder to use (default: found "
                                               "automatically)."),
):
    """Map a vocabulary onto a tree: per class, how it matched (same concept, the concepts
    WordNet puts below it, the concept above it: coarser, or none) and its concepts; the
    classes it cannot name or tell apart are listed after. Exit 0 either way."""
    from dsspn_cli.hierarchy.vocabulary import vocabulary_for
    from dsspn_cli.hierarchy.wordnet import wordnet

    if (labelset is None) == (classes is None):
        raise UserError("give a label set or --classes A,B,... (one of them) to map")
    if tree_file is not None and model is not None:
        raise UserError("--tree and --model: give one of them")
    tree = _tree_to_map(tree_file, model)
    wn = wordnet(wordnet_dir) if wordnet_dir is not None else None
    chosen = vocabulary_for(tree, classes, labelset, wn, strict=False)
    vocabulary, catch_all = chosen.vocabulary, chosen.other
    other = None if catch_all is None else {"id": catch_all.id, "name": catch_all.name}
    if as_json:
        doc = {"source": chosen.source, **vocabulary.to_json(tree), "everything_else": other}
        sys.stdout.write(json.dumps(doc, indent=1) + "\n")
        return
    _print_mapping(tree, vocabulary, chosen.source, labels=classes is None)
    if other is not None:
        _console().print(f"{other['name']} (id {other['id']}): everything else, the pixels of "
                         "no other class (marked 'other: true')", markup=False, highlight=False)


def _tree_to_map(tree_file: Path | None, model: Path | None):
    """The tree of a file (no torch), or the one inside a checkpoint."""
    from dsspn_cli.hierarchy.tree import load_tree

    if model is None:
        return load_tree(tree_file)
    from dsspn_cli.engine.checkpoint import load_checkpoint, tree_of

    return tree_of(load_checkpoint(model), str(model))


def _print_mapping(tree, vocabulary, source: str, labels: bool) -> None:
    from dsspn_cli.console import add_row, styled, table

    console = _console()
    columns = (("id",) if labels else ()) + ("class", "how", "concepts", "synset", "note")
    shown = table(*columns, title=f"{source} mapped onto {tree.source or 'the tree'}")
    for mapping in vocabulary.classes:
        concepts = [f"{c} ({tree.id(c)})" for c in mapping.ordered(tree)]
        if len(concepts) > MAP_SHOWN:
            concepts = concepts[:MAP_SHOWN - 1] + [f"... {len(concepts)} in all"]
        note = mapping.note
        if mapping.choices:
            note += "; choose: " + ", ".join(mapping.choices)
        if mapping.suggestions:
            note += "; did you mean " + ", ".join(mapping.suggestions) + "?"
        row = ([mapping.label_id] if labels else []) + [
            mapping.name, styled((mapping.how, HOW_STYLES[mapping.how])),
            ", ".join(concepts) or "-", mapping.synset or "-", note]
        add_row(shown, *row)
    console.print(shown)
    counts = {how: sum(1 for m in vocabulary.classes if m.how == how) for how in HOW_STYLES}
    console.print(f"{len(vocabulary.classes)} classes: " + ", ".join(
        f"{n} {how}" for how, n in counts.items() if n))
    for problem in vocabulary.problems:
        console.print(styled(("problem", "bold red"), f" {problem.message}"))


@app.command("labelsets")
def list_labelsets():
    """List the built-in label sets and their aliases."""
    from dsspn_cli.console import add_row, table
    from dsspn_cli.hierarchy.labelset import builtin_labelsets, load_labelset

    by_file: dict = {}
    for alias, path in builtin_labelsets().items():
        by_file.setdefault(path, []).append(alias)
    listed = table("name", "title", "use", "labels", "mapped", "ignore", "aliases")
    sets = [load_labelset(path.stem) for path in by_file]
    # The training sets first, then the held-out test sets (scored, never in the shipped tree).
    for ls, aliases in sorted(zip(sets, by_file.values()),
                              key=lambda item: bool(item[0].extra.get("held_out"))):
        use = "held-out test" if ls.extra.get("held_out") else "training"
        add_row(listed, ls.name, ls.title, use, len(ls.labels), len(ls.mapped_labels),
                ls.ignore_index, ", ".join(a for a in aliases if a != ls.name))
    _console().print(listed)


@app.command("wordnet")
def wordnet_status(
    source: Optional[Path] = typer.Option(None, "--from", help="Build the corpus from this "
                                          "WordNet 3.0 database folder."),
):
    """Find WordNet 3.0 (building dsspn's offline copy once if needed) and say where it is."""
    from dsspn_cli.hierarchy.wordnet import wordnet

    wn = wordnet(source)
    root = getattr(wn, "root", "?")
    _console().print(f"WordNet {wn.get_version()} at {root}")
