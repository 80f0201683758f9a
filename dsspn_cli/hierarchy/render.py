"""Showing a concept tree: lines for the terminal and a radial drawing as PNG."""

from __future__ import annotations

import math
from pathlib import Path

from dsspn_cli.hierarchy.tree import ConceptTree

# One colour per dataset, in the order the tree lists them (a colour-blind-safe palette).
DATASET_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9",
                   "#F0E442", "#999999")


def visible_concepts(tree: ConceptTree, dataset: str | None, depth: int | None) -> set[str]:
    """Concepts to show: those a dataset defines and their ancestors; cut at a depth."""
    keep = set(tree.names)
    if dataset is not None:
        keep = set()
        for name in tree.concepts_of(dataset):
            keep.add(name)
            keep.update(tree.ancestors(name))
    if depth is not None:
        keep = {n for n in keep if tree.depth(n) <= depth}
    return keep


def shown_names(tree: ConceptTree, dataset: str | None) -> dict[str, str]:
    """Concept -> the name to show: with a dataset, its own label names with the concept
    beside them ('roadway (road)'); the concept's name otherwise."""
    if dataset is None:
        return {}
    from dsspn_cli.hierarchy.vocabulary import dataset_labels, labelled

    return {concept: labelled(concept, names)
            for concept, names in dataset_labels(tree, dataset).items()}


def tree_lines(tree: ConceptTree, dataset: str | None = None, depth: int | None = None):
    """The tree for the terminal: one line of literal text per concept, under guides. Built
    here rather than with rich's Tree, which leaves out every concept deeper than the console
    is wide (about depth 18 at 80 columns); a line is as long as its concept needs. With a
    dataset, its concepts are named by its own labels, the concept beside them."""
    from rich.text import Text

    colours = {name: DATASET_COLOURS[i % len(DATASET_COLOURS)]
               for i, name in enumerate(tree.datasets)}
    keep = visible_concepts(tree, dataset, depth)
    names = shown_names(tree, dataset)

    def label(name: str, guide: str) -> Text:
        data = tree.node(name)
        neuron = tree.graph.out_degree(name) >= 2
        text = Text(guide, style="dim")
        text.append(f"{tree.id(name)} ", style="dim")
        text.append(names.get(name, name), style="bold" if neuron else "")
        if data.get("synset"):
            text.append(f"  {data['synset']}", style="dim cyan")
        if data.get("kind") == "wordnet":
            text.append("  +wordnet", style="italic magenta")
        for ds, ids in (data.get("labels") or {}).items():
            shown = ",".join(map(str, ids[:4])) + ("…" if len(ids) > 4 else "")
            text.append(f" [{ds}:{shown}]", style=colours.get(ds, "white"))
        hidden = [c for c in tree.children(name) if c not in keep]
        if hidden and depth is not None and tree.depth(name) == depth:
            text.append(f"  (+{len(tree.descendants(name))} below)", style="dim")
        return text

    def below(name: str, prefix: str) -> list:
        children = [c for c in tree.children(name) if c in keep]
        return [(child, prefix, i == len(children) - 1)
                for i, child in reversed(list(enumerate(children)))]

    lines = [label(tree.root, "")]
    stack = below(tree.root, "")
    while stack:                # depth first, without recursion: trees may be very deep
        name, prefix, last = stack.pop()
        lines.append(label(name, prefix + ("└── " if last else "├── ")))
        stack.extend(below(name, prefix + ("    " if last else "│   ")))
    return lines


def draw_png(tree: ConceptTree, path: str | Path, dataset: str | None = None,
             depth: int | None = None, dpi: int = 150) -> Path:
    """A radial drawing: the root in the centre, one ring per depth, leaves around the edge.

    Concepts are dots coloured by the first dataset that labels them (grey for concepts only
    WordNet added); inner concepts are named at their dot, leaves along their ray.
    """
    from matplotlib.lines import Line2D

    from dsspn_cli.console import Progress
    from dsspn_cli.figures import new_figure, png_bytes
    from dsspn_cli.files import atomic_write_bytes

    keep = visible_concepts(tree, dataset, depth)
    names = shown_names(tree, dataset)
    progress = Progress(f"drawing {path}", 2 * len(keep) + 1, unit="steps")
    children = {n: [c for c in tree.children(n) if c in keep] for n in keep}
    leaves = [n for n in tree.names if n in keep and not children[n]]
    angle: dict[str, float] = {}
    for i, name in enumerate(leaves):
        angle[name] = 2 * math.pi * i / max(len(leaves), 1)
    for name in reversed(tree.names):       # children before parents
        if name in keep and children[name]:
            angle[name] = sum(angle[c] for c in children[name]) / len(children[name])
    colours = {name: DATASET_COLOURS[i % len(DATASET_COLOURS)]
               for i, name in enumerate(tree.datasets)}

    size = max(10.0, min(40.0, len(leaves) * 0.09))
    fig = new_figure(size, size)
    ax = fig.add_subplot()
    ax.set_aspect("equal")
    ax.axis("off")

    def xy(name):
        radius = tree.depth(name)
        return radius * math.cos(angle[name]), radius * math.sin(angle[name])

    for name in keep:
        for child in children[name]:
            (x0, y0), (x1, y1) = xy(name), xy(child)
            ax.plot([x0, x1], [y0, y1], color="#bbbbbb", linewidth=0.6, zorder=1)
        progress.advance()
    font = max(4.0, min(9.0, 900.0 / max(len(leaves), 1)))
    for name in keep:
        x, y = xy(name)
        labelled = list(tree.labels(name))
        colour = colours.get(labelled[0], "#777777") if labelled else "#777777"
        ax.scatter([x], [y], s=14 if children[name] else 8, color=colour, zorder=2)
        if children[name]:
            ax.annotate(names.get(name, name), (x, y), fontsize=font + 1, ha="center", va="bottom",
                        xytext=(0, 3), textcoords="offset points", weight="bold", zorder=3)
        else:
            degrees = math.degrees(angle[name])
            flip = 90 < degrees < 270
            ax.text(x + 0.08 * math.cos(angle[name]), y + 0.08 * math.sin(angle[name]),
                    names.get(name, name),
                    fontsize=font, rotation=degrees + 180 if flip else degrees,
                    rotation_mode="anchor", ha="right" if flip else "left", va="center")
        progress.advance()
    handles = [Line2D([], [], marker="o", linestyle="", color=c, label=name)
               for name, c in colours.items()]
    handles.append(Line2D([], [], marker="o", linestyle="", color="#777777",
                          label="WordNet / group"))
    ax.legend(handles=handles, loc="upper left", fontsize=font + 3, frameon=False,
              title="first dataset labelling a concept")
    title = f"{len(keep)} concepts, {sum(1 for n in keep if len(children[n]) >= 2)} neurons"
    ax.set_title(title + (f" — {dataset}" if dataset else ""), fontsize=font + 6)
    extent = max(tree.depth(n) for n in keep) + 1.6
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    progress.update(progress.done, "rendering")
    data = png_bytes(fig, dpi=dpi, bbox_inches="tight")
    progress.advance()
    progress.close()
    return atomic_write_bytes(path, data)


def subtree(tree: ConceptTree, keep: set[str]) -> ConceptTree:
    """The tree restricted to ``keep`` (which must hold the root and each kept node's parent)."""
    graph = tree.graph.subgraph(n for n in tree.names if n in keep).copy()
    return ConceptTree(graph, tree.datasets, tree.max_depth, tree.source)
