"""Masking tables: everything training needs from the tree, as plain arrays.

- ``neurons``: every concept with two or more children, in concept order, with its ordered
  children. Neuron ``k``'s prediction layer has one output map per child.
- ``concept_path``: per concept, the (neuron, child index) pairs from the root down to it: the
  neurons a pixel of that concept activates and the child each must choose (paper 3.3).
  ``path_neuron`` / ``path_child`` hold the same, padded with -1 to ``max_depth`` columns, so a
  label map becomes per-level targets with two table lookups.
- per dataset: ``label_to_concept`` (label-map value -> concept id, -1 for ignore; as long as
  the largest value, at least 256, so a uint8 map indexes it directly), the ignore value, and
  ``child_mask``: per neuron, which children the dataset defines (a label at or below the
  child). Children a dataset does not define are masked out of its loss (concept masking,
  paper 3.4).
- ``exclusive``: per dataset, the concepts it labels *and* has finer labels below; its label
  there means 'this concept, but none of my finer ones'.
- ``other_of``: where such a concept has a remainder child '<name>-other' (the merge adds one
  to a labelled concept left with a single child), that is what the label means, so the
  dataset's label is taken as the '-other' concept: its pixels train the '-other' child as
  positive (and it is no longer exclusive). Predictions of the '-other' concept are written
  as the concept's label again.

Pure Python, no torch: the data and model layers turn these lists into tensors.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from dsspn_cli.errors import UserError
from dsspn_cli.files import atomic_write_text
from dsspn_cli.hierarchy.tree import ConceptTree

FORMAT = "dsspn-masking-tables"
VERSION = 1
IGNORE = -1


@dataclass
class DatasetTable:
    name: str
    ignore_index: int
    label_to_concept: list[int]
    child_mask: list[list[bool]]
    exclusive: list[int]
    label_names: dict[int, str] = field(default_factory=dict)
    other_of: dict[int, int] = field(default_factory=dict)   # '-other' concept -> its parent

    def concept(self, label_id: int) -> int:
        if 0 <= label_id < len(self.label_to_concept):
            return self.label_to_concept[label_id]
        return IGNORE

    @property
    def label_ids(self) -> list[int]:
        """The label ids that map to a concept: the classes evaluation scores."""
        return [i for i, c in enumerate(self.label_to_concept) if c >= 0]

    @property
    def concept_label(self) -> dict[int, int]:
        """Concept -> the dataset's label id for it; where several labels map to one concept,
        the first (smallest id): the one every prediction of that concept is written as."""
        found: dict[int, int] = {}
        for label_id in self.label_ids:
            found.setdefault(self.label_to_concept[label_id], label_id)
        return found


def _above_labels(tree: ConceptTree, labelled: set[str]) -> set[str]:
    """The concepts with one of ``labelled`` below them."""
    return {n for n in tree.names if any(d in labelled for d in tree.descendants(n))}


def _as_other(tree: ConceptTree, label_map: dict[int, str]) -> dict[int, str]:
    """The label map with each label of a concept that has finer labels of the same dataset
    below it and a remainder child ('-other') moved to that child."""
    labelled = set(label_map.values())
    moved = {}
    for name in labelled & _above_labels(tree, labelled):
        others = [c for c in tree.children(name) if tree.node(c).get("kind") == "other"]
        if others:
            moved[name] = others[0]
    return {label_id: moved.get(name, name) for label_id, name in label_map.items()}


def _labelset_or_none(tree, info, dataset):
    """The dataset's label set, for label names only; None when it cannot be found."""
    from dsspn_cli.hierarchy.tree import labelset_of

    try:
        return labelset_of(tree.source or None, info, dataset)
    except UserError:
        return None


@dataclass
class MaskingTable:
    concepts: list[str]
    synsets: list[str | None]
    parent: list[int]
    depth: list[int]
    neuron_concept: list[int]           # neuron -> concept
    neuron_children: list[list[int]]    # neuron -> ordered child concepts
    concept_neuron: list[int]           # concept -> neuron, -1 for leaves
    concept_path: list[list[tuple[int, int]]]
    max_depth: int
    datasets: dict[str, DatasetTable]
    tree_digest: str = ""

    @property
    def path_neuron(self) -> list[list[int]]:
        return [[n for n, _ in path] + [IGNORE] * (self.max_depth - len(path))
                for path in self.concept_path]

    @property
    def path_child(self) -> list[list[int]]:
        return [[c for _, c in path] + [IGNORE] * (self.max_depth - len(path))
                for path in self.concept_path]

    def ancestors(self, concept: int) -> list[int]:
        """The concepts above ``concept``, root first (each one a neuron: no concept of a tree
        has a single child)."""
        return [self.neuron_concept[n] for n, _ in self.concept_path[concept]]

    def levels(self) -> list[list[int]]:
        """Each concept's ancestor at every depth, itself where shallower: C x (depth + 1)
        concept ids, to cut concept maps at a level of the tree."""
        depth = max(self.depth)
        rows = []
        for concept in range(len(self.concepts)):
            chain = self.ancestors(concept) + [concept]
            rows.append([chain[min(level, len(chain) - 1)] for level in range(depth + 1)])
        return rows

    def dataset(self, name: str) -> DatasetTable:
        try:
            return self.datasets[name]
        except KeyError:
            raise UserError(f"dataset '{name}' is not in this tree (it has "
                            f"{', '.join(self.datasets)}); merge a tree that includes it") from None

    # ---------------------------------------------------------------------------- building

    @classmethod
    def from_tree(cls, tree: ConceptTree, labelsets: dict | None = None) -> "MaskingTable":
        names = tree.names
        index = tree.index
        neurons = tree.neurons
        neuron_index = {name: k for k, name in enumerate(neurons)}
        paths = []
        for name in names:
            chain = tree.ancestors(name) + [name]
            paths.append([(neuron_index[p], tree.children(p).index(c))
                          for p, c in zip(chain[:-1], chain[1:])])
        depth_limit = max(max(len(p) for p in paths), 1)
        datasets = {}
        for dataset, info in tree.datasets.items():
            original = tree.label_map(dataset)
            label_map = _as_other(tree, original)
            labelset = (labelsets or {}).get(dataset) or _labelset_or_none(tree, info, dataset)
            ignore_index = int((info or {}).get("ignore_index", 255))
            size = max([256, ignore_index + 1] + [i + 1 for i in label_map])
            lut = [IGNORE] * size
            for label_id, concept in label_map.items():
                if label_id >= 0:
                    lut[label_id] = index[concept]
            labelled = set(label_map.values())
            above = _above_labels(tree, labelled)
            defined = labelled | above          # a label at or below
            mask = [[child in defined for child in tree.children(neuron)] for neuron in neurons]
            exclusive = [index[n] for n in names if n in labelled and n in above]
            label_names = ({label.id: label.name for label in labelset.labels}
                           if labelset is not None else {})
            other_of = {index[label_map[i]]: index[original[i]] for i in label_map
                        if label_map[i] != original[i]}
            datasets[dataset] = DatasetTable(dataset, ignore_index, lut, mask, exclusive,
                                             label_names, other_of)
        digest = hashlib.sha256(json.dumps(tree.to_node_link(), sort_keys=True).encode())
        return cls(
            concepts=names,
            synsets=[tree.node(n).get("synset") for n in names],
            parent=[index[tree.parent(n)] if tree.parent(n) else IGNORE for n in names],
            depth=[tree.depth(n) for n in names],
            neuron_concept=[index[n] for n in neurons],
            neuron_children=[[index[c] for c in tree.children(n)] for n in neurons],
            concept_neuron=[neuron_index.get(n, IGNORE) for n in names],
            concept_path=paths,
            max_depth=depth_limit,
            datasets=datasets,
            tree_digest=digest.hexdigest(),
        )

    # ---------------------------------------------------------------------------- files

    def to_dict(self) -> dict:
        return {
            "format": FORMAT, "version": VERSION, "tree_sha256": self.tree_digest,
            "concepts": self.concepts, "synsets": self.synsets, "parent": self.parent,
            "depth": self.depth, "max_depth": self.max_depth,
            "neuron_concept": self.neuron_concept, "neuron_children": self.neuron_children,
            "concept_neuron": self.concept_neuron,
            "concept_path": [[list(step) for step in path] for path in self.concept_path],
            "path_neuron": self.path_neuron, "path_child": self.path_child,
            "datasets": {
                name: {"ignore_index": t.ignore_index, "label_to_concept": t.label_to_concept,
                       "child_mask": [[int(b) for b in row] for row in t.child_mask],
                       "exclusive": t.exclusive,
                       "label_names": {str(k): v for k, v in t.label_names.items()},
                       "other_of": {str(k): v for k, v in t.other_of.items()}}
                for name, t in self.datasets.items()
            },
        }

    @classmethod
    def from_dict(cls, data: dict, source: str = "tables") -> "MaskingTable":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise UserError(f"{source}: not dsspn masking tables; build them with "
                            "'dsspn hierarchy tables'")
        try:
            datasets = {
                name: DatasetTable(name, int(t["ignore_index"]), list(t["label_to_concept"]),
                                   [[bool(b) for b in row] for row in t["child_mask"]],
                                   list(t["exclusive"]),
                                   {int(k): v for k, v in (t.get("label_names") or {}).items()},
                                   {int(k): int(v) for k, v in (t.get("other_of") or {}).items()})
                for name, t in data["datasets"].items()
            }
            return cls(
                concepts=list(data["concepts"]), synsets=list(data["synsets"]),
                parent=list(data["parent"]), depth=list(data["depth"]),
                neuron_concept=list(data["neuron_concept"]),
                neuron_children=[list(c) for c in data["neuron_children"]],
                concept_neuron=list(data["concept_neuron"]),
                concept_path=[[tuple(step) for step in path] for path in data["concept_path"]],
                max_depth=int(data["max_depth"]), datasets=datasets,
                tree_digest=data.get("tree_sha256", ""),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{source}: damaged masking tables (field {exc}); rebuild them "
                            "with 'dsspn hierarchy tables'") from None

    def save(self, folder: str | Path) -> list[Path]:
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise UserError(f"{folder}: exists and is not a folder; give a folder for -o")
        return [
            atomic_write_text(folder / "tables.json", json.dumps(self.to_dict()) + "\n"),
            atomic_write_text(folder / "summary.txt", self.summary()),
        ]

    @classmethod
    def load(cls, folder: str | Path) -> "MaskingTable":
        path = Path(folder)
        if path.is_dir():
            path = path / "tables.json"
        if not path.is_file():
            raise UserError(f"{path}: no masking tables here; build them with "
                            "'dsspn hierarchy tables -o DIR'")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UserError(f"{path}: damaged masking tables (not JSON); rebuild them with "
                            "'dsspn hierarchy tables'") from None
        return cls.from_dict(data, str(path))

    def summary(self) -> str:
        lines = [
            f"{len(self.concepts)} concepts, {len(self.neuron_concept)} semantic neurons, "
            f"paths up to {self.max_depth} neurons long",
            f"tree sha256 {self.tree_digest}",
            "",
            "dataset        labels  concepts  neurons used  children masked  exclusive",
        ]
        for name, table in self.datasets.items():
            labels = sum(1 for c in table.label_to_concept if c != IGNORE)
            concepts = len({c for c in table.label_to_concept if c != IGNORE})
            used = [row for row in table.child_mask if sum(row) >= 1]
            masked = sum(row.count(False) for row in used)
            lines.append(f"{name:<14} {labels:>6}  {concepts:>8}  {len(used):>12}  "
                         f"{masked:>15}  {len(table.exclusive):>9}")
        lines += ["", "neuron  concept (depth): children, with the datasets defining each"]
        for k, concept in enumerate(self.neuron_concept):
            parts = []
            for child in self.neuron_children[k]:
                position = self.neuron_children[k].index(child)
                who = [name for name, t in self.datasets.items() if t.child_mask[k][position]]
                parts.append(f"{self.concepts[child]} [{','.join(who) or '-'}]")
            lines.append(f"{k:>6}  {self.concepts[concept]} ({self.depth[concept]}): "
                         + "; ".join(parts))
        return "\n".join(lines) + "\n"
