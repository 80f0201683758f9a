"""The concept tree: one node per concept, edges parent -> child, in a networkx DiGraph.

The tree is the single source of truth for concept ids: concept ``i`` is the ``i``-th node of a
depth-first walk from the root that visits children in their stored order. Nodes are keyed by
their (unique) name and carry:

- ``synset``: the WordNet 3.0 synset name, or None;
- ``labels``: ``{dataset: [label ids]}``, the dataset labels mapped to this concept;
- ``kind``: ``concept`` (from a label set) or ``wordnet`` (an intermediate added by the merge).

On disk a tree is YAML, nested the way a person reads a tree (``dsspn hierarchy merge``
writes it; people may edit it), or networkx node-link JSON (``dsspn hierarchy show --format
json``). Both carry ``datasets``: per dataset, the label set it came from and its ignore value.
Reading and checking those files is ``treefile.py``; writing them is here (``save``).
"""

from __future__ import annotations

import json
from pathlib import Path

import networkx as nx

from dsspn_cli.errors import UserError, one_line
from dsspn_cli.files import atomic_write_text

# Reading and checking tree files lives in treefile.py; its entry points are named here too,
# so that 'from dsspn_cli.hierarchy.tree import load_tree' reads as it always has.
from dsspn_cli.hierarchy.treefile import (  # noqa: F401  (names of this module's API)
    FORMAT,
    VERSION,
    _error,
    graph_from_node_link,
    graph_from_yaml,
    labelset_of,
    load_tree,
    read_graph,
    structural_problems,
    unprintable_names,
)


class ConceptTree:
    def __init__(self, graph: nx.DiGraph, datasets: dict | None = None, max_depth: int = 5,
                 source: str = ""):
        self.graph = graph
        self.datasets = dict(datasets or {})
        self.max_depth = max_depth
        self.source = source
        problems = structural_problems(graph)
        if problems:
            where = f"{source}: " if source else ""
            raise _error(f"{where}{problems[0]}; run 'dsspn hierarchy check' for every "
                         "problem and fix the tree")
        self.root = next(n for n in graph if graph.in_degree(n) == 0)
        self.names: list[str] = list(nx.dfs_preorder_nodes(graph, self.root))
        self.index = {name: i for i, name in enumerate(self.names)}

    # ------------------------------------------------------------------------------ queries

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name) -> bool:
        return name in self.index

    def id(self, name: str) -> int:
        return self.index[name]

    def node(self, name: str) -> dict:
        return self.graph.nodes[name]

    def parent(self, name: str) -> str | None:
        preds = list(self.graph.predecessors(name))
        return preds[0] if preds else None

    def children(self, name: str) -> list[str]:
        return list(self.graph.successors(name))

    def depth(self, name: str) -> int:
        return len(self.ancestors(name))

    def ancestors(self, name: str) -> list[str]:
        """Root first, the parent last; not the concept itself."""
        path = []
        current = self.parent(name)
        while current is not None:
            path.append(current)
            current = self.parent(current)
        return path[::-1]

    def descendants(self, name: str) -> list[str]:
        return [n for n in nx.dfs_preorder_nodes(self.graph, name) if n != name]

    @property
    def neurons(self) -> list[str]:
        """Concepts with two or more children: one semantic neuron each, in concept order."""
        return [n for n in self.names if self.graph.out_degree(n) >= 2]

    @property
    def height(self) -> int:
        return max(self.depth(n) for n in self.names)

    def largest_fanout(self) -> tuple[str, int]:
        name = max(self.names, key=lambda n: (self.graph.out_degree(n), -self.index[n]))
        return name, self.graph.out_degree(name)

    def labels(self, name: str) -> dict[str, list[int]]:
        return self.graph.nodes[name].get("labels") or {}

    def label_map(self, dataset: str) -> dict[int, str]:
        """Label id -> concept name for one dataset."""
        table = {}
        for name in self.names:
            for label_id in self.labels(name).get(dataset, []):
                table[label_id] = name
        return table

    def defines(self, dataset: str, name: str) -> bool:
        """Whether the dataset labels this concept or something below it."""
        return any(dataset in self.labels(n) for n in [name, *self.descendants(name)])

    def dataset_name(self, name: str) -> str:
        """A dataset of the tree by its name or a built-in alias ('ade20k' -> 'ade')."""
        if name in self.datasets:
            return name
        from dsspn_cli.hierarchy.labelset import builtin_labelsets

        path = builtin_labelsets().get(name.lower())
        if path is not None and path.stem in self.datasets:
            return path.stem
        raise UserError(f"--dataset {name}: not in this concept tree (it has "
                        f"{', '.join(self.datasets)})")

    def label_names(self) -> dict[str, tuple[str, str]]:
        """Every dataset's label names (lower case; readable names too, such as Mapillary's
        'Road') -> (their concept, the dataset); from the label sets the tree names (a label
        set that cannot be read gives none)."""
        found: dict = {}
        for dataset, info in self.datasets.items():
            try:
                labelset = labelset_of(self.source or None, info, dataset)
            except UserError:
                continue
            concepts = self.label_map(dataset)
            for label in labelset.labels:
                if label.id in concepts:
                    value = (concepts[label.id], dataset)
                    for name in (label.name, label.extra.get("readable")):
                        if isinstance(name, str) and name.strip():
                            found.setdefault(" ".join(name.split()).lower(), value)
        return found

    def concepts_of(self, dataset: str) -> list[str]:
        return [n for n in self.names if dataset in self.labels(n)]

    def unwritable_at(self, dataset: str, level: int) -> list[str]:
        """The dataset's concepts that a cut at depth ``level`` leaves with no label of the
        dataset: deeper than the cut, with no labelled ancestor at or above it. Their pixels
        would stop at a concept the dataset has no id for."""
        found = []
        for name in self.concepts_of(dataset):
            path = self.ancestors(name) + [name]
            if len(path) - 1 > level and not any(dataset in self.labels(a)
                                                 for a in path[:level + 1]):
                found.append(name)
        return found

    def check_level(self, dataset: str, level: int | None) -> None:
        """``--level`` with ``--dataset``: refused in one line where the cut would leave
        pixels with no id of the dataset (an all-'unlabelled' map is never written)."""
        if level is None or not self.unwritable_at(dataset, level):
            return
        lost = self.unwritable_at(dataset, level)
        fits = next(d for d in range(level + 1, self.height + 1)
                    if not self.unwritable_at(dataset, d))
        raise UserError(
            f"--level {level} with --dataset {dataset}: {len(lost)} of its labels (first: "
            f"{', '.join(lost[:3])}) sit below depth {level} with none of its labels above "
            f"them up to that depth, so their pixels would have no {dataset} id; give --level "
            f"{fits} or deeper, or leave out --dataset to write concept ids at depth {level}")

    def by_synset(self) -> dict[str, str]:
        return {d["synset"]: n for n, d in self.graph.nodes(data=True) if d.get("synset")}

    def find(self, text: str, where: str = "", wn=None) -> str:
        """The one concept a person means by ``text``, named as every class is
        (``dsspn_cli.hierarchy.vocabulary``): a concept's name, its synset (vehicle.n.01),
        any word of the synset (automobile), a dataset's label name (Cityscapes'
        'vegetation'), or a WordNet word below or above one concept ('canine', 'poodle');
        one line with the nearest names otherwise, or when it names several concepts."""
        from dsspn_cli.hierarchy.vocabulary import map_vocabulary

        mapping = map_vocabulary(self, [text], wn, strict=True,
                                 source=where or "concept").classes[0]
        if len(mapping.concepts) > 1:
            raise UserError(one_line(
                f"{where or text}: '{text}' names {len(mapping.concepts)} concepts "
                f"({', '.join(mapping.ordered(self))}); name one of them"))
        return next(iter(mapping.concepts))

    # ------------------------------------------------------------------------------ writing

    def to_yaml_text(self, header: str = "") -> str:
        import yaml

        def flow(value) -> str:
            text = yaml.safe_dump(value, default_flow_style=True, width=10**6,
                                  sort_keys=False, allow_unicode=True)
            # A lone scalar is dumped as a document ('car\n...\n'): keep the scalar only. Not
            # strip(): that would take a no-break space (U+00A0) off the end of a plain scalar.
            text = text.removesuffix("\n...\n").removesuffix("\n")
            if len(text.splitlines()) <= 1:
                return text
            # A string with a line break is dumped folded over several lines, which the
            # indentation here would break: write it double-quoted, with escapes, instead.
            return inline(value)

        def inline(value) -> str:
            """A value on one line, written as it may stand inside {...} or [...]."""
            if isinstance(value, dict):
                return "{" + ", ".join(f"{inline(k)}: {inline(v)}"
                                       for k, v in value.items()) + "}"
            if isinstance(value, list):
                return "[" + ", ".join(inline(v) for v in value) + "]"
            text = yaml.safe_dump([value], default_flow_style=True, width=10**6,
                                  allow_unicode=True).removesuffix("\n")
            if len(text.splitlines()) == 1:
                return text[1:-1]
            return yaml.safe_dump(value, default_style='"', width=10**6,
                                  allow_unicode=True).removesuffix("\n")

        def node_fields(name) -> dict:
            data = self.graph.nodes[name]
            fields = {"name": name}
            if data.get("synset"):
                fields["synset"] = data["synset"]
            if data.get("kind", "concept") != "concept":
                fields["kind"] = data["kind"]
            if data.get("labels"):
                fields["labels"] = {k: list(v) for k, v in data["labels"].items()}
            return fields

        lines: list[str] = []

        # Depth first, with a stack rather than recursion: a tree may be deeper than Python's
        # recursion limit (it cannot be read back as YAML then, but JSON can hold it).
        stack = [(self.root, "  ", "")]
        while stack:
            name, indent, bullet = stack.pop()
            fields = node_fields(name)
            children = self.children(name)
            if not children and bullet:
                lines.append(f"{indent}{bullet}{flow(fields)}")
                continue
            inner = indent + " " * len(bullet)
            for i, (key, value) in enumerate(fields.items()):
                prefix = indent + bullet if i == 0 else inner
                lines.append(f"{prefix}{key}: {flow(value)}")
            if children:
                lines.append(f"{inner}children:")
                stack.extend((child, inner, "- ") for child in reversed(children))

        meta = {"format": FORMAT, "version": VERSION, "max_depth": self.max_depth}
        text = header + yaml.safe_dump(meta, sort_keys=False) + "datasets:\n"
        for dataset, info in self.datasets.items():
            text += f"  {inline(dataset)}: {flow(info)}\n"
        return text + "tree:\n" + "\n".join(lines) + "\n"

    def to_node_link(self) -> dict:
        """networkx node-link data; node ids are concept ids."""
        relabelled = nx.DiGraph()
        relabelled.graph.update({"format": FORMAT, "version": VERSION,
                                 "max_depth": self.max_depth, "datasets": self.datasets})
        for name in self.names:
            data = self.graph.nodes[name]
            relabelled.add_node(self.index[name], name=name, synset=data.get("synset"),
                                kind=data.get("kind", "concept"),
                                labels={k: list(v) for k, v in (data.get("labels") or {}).items()})
        for name in self.names:
            for child in self.children(name):
                relabelled.add_edge(self.index[name], self.index[child])
        return nx.node_link_data(relabelled, edges="edges")

    def save(self, path: str | Path, header: str = "") -> Path:
        path = Path(path)
        if path.suffix.lower() == ".json":
            return atomic_write_text(path, json.dumps(self.to_node_link(), indent=1) + "\n")
        return atomic_write_text(path, self.to_yaml_text(header))
