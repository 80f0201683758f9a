"""Merging label sets into one concept tree, WordTree-style (YOLO9000), as DSSPN section 4.5 does.

The first label set is the skeleton: its groups (COCO-Stuff: things/stuff > indoor/outdoor >
27 super-categories) and labels are placed as the dataset defines them, under a root
``entity`` (entity.n.01). Every other label is then placed by its WordNet synset:

1. the same synset already in the tree -> the same concept (``car`` in all four datasets);
2. an explicit ``parent`` -> under that concept;
3. otherwise under the deepest concept whose synset is a WordNet hypernym of the label's
   (ADE20K ``armchair`` under COCO ``chair``), and if the label is more general than concepts
   already in the tree it becomes their parent (a coarse label of one dataset above the finer
   labels of another).

Then, between a concept that has a synset and its children, WordNet concepts that group two
or more (but not all) of the children are added (``mammal`` under ``animal``), only where the
depth limit allows and only below WordNet's abstract top levels. Concepts without labels that
are left with a single child are spliced out, so each remaining inner concept has a semantic
neuron to choose between its children.

Every step is deterministic: the same label sets in the same order give the same tree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import networkx as nx

from dsspn_cli.errors import UserError
from dsspn_cli.hierarchy.labelset import Label, LabelSet, is_synset_name, resolve_synsets
from dsspn_cli.hierarchy.tree import ConceptTree

ROOT_NAME = "entity"
ROOT_SYNSET = "entity.n.01"
# WordNet's top levels (entity, physical entity, object, whole, abstraction...) group
# everything and tell nothing: intermediates must lie at least this deep in WordNet.
MIN_INTERMEDIATE_WORDNET_DEPTH = 4


@dataclass
class DatasetReport:
    name: str
    title: str
    labels: int = 0          # labels to map (not void, really annotated)
    new_concepts: int = 0    # concepts this dataset introduced
    joined: int = 0          # labels that joined a concept another dataset defined
    explicit: int = 0        # placed by an explicit parent


@dataclass
class Placement:
    """Where one label went: its concept, the concept above it, and how it was placed."""

    dataset: str
    label: str
    label_id: int
    synset: str | None
    by_name: bool            # the synset was looked up by the label's name, not given
    concept: str             # the concept the label maps to
    how: str                 # joined | same name | parent | WordNet | top | skeleton
    detail: str = ""         # the how in words: 'same synset as car', 'above armchair'...
    parent: str | None = None          # the concept above it in the merged tree
    under: str | None = None           # the concept it was placed under, at the time


@dataclass
class MergeReport:
    datasets: list[DatasetReport] = field(default_factory=list)
    intermediates: list[str] = field(default_factory=list)
    spliced: list[str] = field(default_factory=list)
    others: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    placements: list[Placement] = field(default_factory=list)
    # Labels placed where a person should look: at the top of the tree, or a sense guessed
    # from the name made a kind of another dataset's label. One line each, with the fix.
    warnings: list[str] = field(default_factory=list)


class _Builder:
    def __init__(self, wn, max_depth: int, onto: ConceptTree | None = None):
        self.wn = wn
        self.max_depth = max_depth
        self.graph = nx.DiGraph()
        self.root = ROOT_NAME
        self.graph.add_node(ROOT_NAME, synset=ROOT_SYNSET, labels={}, kind="concept")
        # Concepts that must not move (merging onto a trained tree): each keeps its parent,
        # so each keeps its ancestors, and nothing below them is spliced or regrouped.
        self.frozen: frozenset[str] = frozenset()
        if onto is not None:
            self.graph = nx.DiGraph()
            for name in onto.names:
                data = onto.node(name)
                self.graph.add_node(name, synset=data.get("synset"), kind=data.get(
                    "kind", "concept"), labels={k: list(v) for k, v in onto.labels(name).items()})
            for name in onto.names:
                for child in onto.children(name):
                    self.graph.add_edge(name, child)
            self.root = onto.root
            self.frozen = frozenset(onto.names)
        self.by_synset: dict[str, str] = {d["synset"]: n for n, d in self.graph.nodes(data=True)
                                          if d.get("synset")}
        self._closure_cache: dict[str, frozenset[str]] = {}
        self.placements: list[Placement] = []
        self.warnings: list[str] = []
        self.by_name: set[tuple[str, int]] = set()     # (dataset, label id): guessed synsets

    # -------------------------------------------------------------------------- WordNet

    def synset(self, name: str, where: str):
        from nltk.corpus.reader.wordnet import WordNetError

        try:
            found = self.wn.synset(name)
        except (WordNetError, ValueError):
            found = None
        if found is not None and found.pos() == "n":
            return found
        raise UserError(f"{where}: unknown WordNet 3.0 noun synset '{name}'; use an existing "
                        "name like car.n.01 (python -c \"from nltk.corpus import wordnet; "
                        "print(wordnet.synsets('car'))\")")

    def canonical(self, labelset: LabelSet) -> LabelSet:
        """Every synset under its own name ('auto.n.01' is car.n.01), checked to exist."""
        def canon(name, where):
            return self.synset(name, where).name() if name else name

        def canon_parent(ref, where):
            return canon(ref, where) if ref and is_synset_name(ref) else ref

        groups = [replace(g, synset=canon(g.synset, f"{labelset.source}: group '{g.name}'"),
                          parent=canon_parent(g.parent, f"{labelset.source}: group '{g.name}'"))
                  for g in labelset.groups]
        labels = []
        for item in labelset.labels:
            where = f"{labelset.source}: label '{item.name}' (id {item.id})"
            labels.append(replace(item, synset=canon(item.synset, where),
                                  parent=canon_parent(item.parent, where)))
        return replace(labelset, groups=groups, labels=labels)

    def hypernyms(self, name: str) -> frozenset[str]:
        """Every proper hypernym of a synset, over all of its paths (instance ones included)."""
        if name not in self._closure_cache:
            found = set()
            for path in self.wn.synset(name).hypernym_paths():
                found.update(s.name() for s in path)
            found.discard(name)
            self._closure_cache[name] = frozenset(found)
        return self._closure_cache[name]

    # -------------------------------------------------------------------------- tree edits

    def depth(self, node: str) -> int:
        return len(nx.ancestors(self.graph, node))

    def parent(self, node: str) -> str | None:
        preds = list(self.graph.predecessors(node))
        return preds[0] if preds else None

    def height(self, node: str) -> int:
        """Levels below a node (0 for a leaf)."""
        lengths = nx.single_source_shortest_path_length(self.graph, node)
        return max(lengths.values())

    def order(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(nx.dfs_preorder_nodes(self.graph, self.root))}

    def set_children(self, parent: str, children: list[str]) -> None:
        for child in list(self.graph.successors(parent)):
            self.graph.remove_edge(parent, child)
        for child in children:
            for old in list(self.graph.predecessors(child)):
                self.graph.remove_edge(old, child)
            self.graph.add_edge(parent, child)

    def unique_name(self, wanted: str, synset: str | None, dataset: str) -> str:
        """``wanted``, or on a clash the synset's own word ('pedestrian' for Cityscapes'
        'person'), or the name with the synset or dataset in brackets."""
        if wanted not in self.graph:
            return wanted
        candidates = [f"{wanted} ({dataset})"]
        if synset:
            lemma = self.wn.synset(synset).lemma_names()[0].replace("_", " ")
            candidates[:0] = [lemma, f"{wanted} ({synset})"]
        for candidate in candidates:
            if candidate not in self.graph:
                return candidate
        i = 2
        while f"{wanted} ({dataset} {i})" in self.graph:
            i += 1
        return f"{wanted} ({dataset} {i})"

    def add(self, name: str, synset: str | None, parent: str, adopt=(), kind="concept") -> str:
        self.graph.add_node(name, synset=synset, labels={}, kind=kind)
        if synset:
            self.by_synset[synset] = name
        siblings = list(self.graph.successors(parent))
        adopt = [child for child in siblings if child in set(adopt) and child not in self.frozen]
        if adopt:
            # The new concept takes the place of the first child it adopts.
            position = siblings.index(adopt[0])
            kept = [c for c in siblings if c not in adopt]
            kept.insert(position, name)
            self.set_children(parent, kept)
            self.set_children(name, adopt)
        else:
            self.graph.add_edge(parent, name)
        return name

    # -------------------------------------------------------------------------- placement

    def placement(self, synset: str, where: str = "") -> tuple[str, list[str]]:
        """Where a concept with this synset goes: (parent, existing concepts it adopts)."""
        above = self.hypernyms(synset)
        order = self.order()
        candidates = [n for s, n in self.by_synset.items() if s in above]
        if not candidates:
            raise UserError(f"{where or synset}: no concept of the tree is a WordNet hypernym "
                            f"of {synset}; give the label a 'parent:'")
        up = max(candidates, key=lambda n: (self.depth(n), -order[n]))
        # Concepts more specific than the new one, reachable below 'up': the new concept goes
        # beside them and adopts them, under the parent holding most of them.
        below_up = nx.descendants(self.graph, up) | {up}
        finer = {n for s, n in self.by_synset.items()
                 if n in below_up and n != up and synset in self.hypernyms(s)}
        # Only the topmost of them: one below another moves along with its ancestor; and
        # none that must not move (nor, so, anything below it).
        finer = [n for n in finer if not (nx.ancestors(self.graph, n) & finer)
                 and n not in self.frozen]
        counts: dict[str, list[str]] = {}
        for node in finer:
            counts.setdefault(self.parent(node), []).append(node)
        if counts:
            parent = max(counts, key=lambda p: (len(counts[p]), self.depth(p), -order[p]))
            adopt = sorted(counts[parent], key=order.__getitem__)
            if self.depth(parent) + 1 + max(self.height(a) + 1 for a in adopt) <= self.max_depth:
                left = sorted(n for p, nodes in counts.items() if p != parent for n in nodes)
                if left and where:
                    self.notes.append(f"{where}: WordNet puts {', '.join(left[:5])} below it too, "
                                      f"but they stay where their dataset put them")
                return parent, adopt
        return up, []

    def within_depth(self, parent: str, node_height: int = 0) -> str:
        """The parent itself, or its ancestor deep enough that the new concept fits."""
        while self.depth(parent) + 1 + node_height > self.max_depth and self.parent(parent):
            parent = self.parent(parent)
        return parent

    # -------------------------------------------------------------------------- label sets

    def add_labelset(self, labelset: LabelSet, base: bool, report: MergeReport) -> None:
        labelset = self.canonical(labelset)
        rep = DatasetReport(labelset.name, labelset.title, labels=len(labelset.mapped_labels))
        local: dict[str, str] = {}       # group/label name in this set -> concept

        def resolve_parent(ref: str, where: str, synset: str | None = None) -> str:
            """A parent named as a group/label of this set, a synset, or a concept merged
            so far (e.g. COCO's 'outdoor-things'); WordNet decides if that concept is absent."""
            if ref in local:
                return local[ref]
            if is_synset_name(ref):
                self.synset(ref, where)
                if ref in self.by_synset:
                    return self.by_synset[ref]
                return self.placement(ref)[0]
            if ref in self.graph:
                return ref
            if ref not in _shipped_concepts():
                raise UserError(f"{where}: unknown parent '{ref}'; name a group or label of "
                                f"{labelset.source}, a synset like road.n.01, or a concept of "
                                "the datasets merged before it")
            # A concept of a built-in dataset not merged this time (COCO's 'outdoor-things'
            # when merging Mapillary alone): WordNet places the label, or the root takes it.
            fallback = self.placement(synset)[0] if synset else self.root
            self.notes.append(f"{where}: parent '{ref}' is not in this tree (its dataset is not "
                              f"merged); placed under '{fallback}'")
            return fallback

        for group in _groups_in_order(labelset):
            where = f"{labelset.source}: group '{group.name}'"
            if group.synset:
                self.synset(group.synset, where)
                if group.synset in self.by_synset:
                    local[group.name] = self.by_synset[group.synset]
                    continue
            parent = resolve_parent(group.parent, where) if group.parent else (
                self.placement(group.synset)[0] if group.synset else self.root)
            name = self.unique_name(group.name, group.synset, labelset.name)
            local[group.name] = self.add(name, group.synset, self.within_depth(parent))

        # Labels never annotated (COCO's 'street sign') still name a concept of the dataset's
        # hierarchy that other datasets may label; it is dropped at the end if none does.
        for label in _labels_in_order(labelset):
            where = f"{labelset.source}: label '{label.name}' (id {label.id})"
            concept = self.place_label(label, labelset, resolve_parent, where, rep, local)
            local[label.name] = concept
            if label.used:
                ids = self.graph.nodes[concept]["labels"].setdefault(labelset.name, [])
                ids.append(label.id)
        report.datasets.append(rep)
        self.fix_single_children(report, final=False)

    def place_label(self, label: Label, labelset: LabelSet, resolve_parent, where: str,
                    rep: DatasetReport, local: dict[str, str]) -> str:
        """Place one label; its placement (and any warning about it) is recorded."""
        by_name = (labelset.name, label.id) in self.by_name
        concept, how, detail, under, was_leaf = self._place(label, labelset, resolve_parent,
                                                            where, rep, local)
        placement = Placement(labelset.name, label.name, label.id, label.synset, by_name,
                              concept, how, detail, under=under)
        self.placements.append(placement)
        warning = self.warning(placement, labelset, was_leaf)
        if warning:
            self.warnings.append(warning)
        return concept

    def warning(self, placed: Placement, labelset: LabelSet, was_leaf: bool) -> str:
        """One line where WordNet put a label where a person should look: at the top of
        the tree, or, for a sense guessed from the label's name, below a label of another
        dataset that had nothing below it (``was_leaf``: that label is split in two by a
        guess)."""
        if placed.how != "WordNet" or placed.under is None:
            return ""
        at_top = placed.under == self.root
        owners = [] if at_top else [d for d in self.graph.nodes[placed.under]["labels"]
                                    if d != labelset.name]
        if not at_top and not (placed.by_name and owners and was_leaf):
            return ""
        synset = self.wn.synset(placed.synset)
        sense = f"{placed.synset} ({synset.definition()})" + (
            ", the sense looked up by its name" if placed.by_name else "")
        yaml = ", in a YAML label set," if Path(labelset.source).suffix.lower() == ".txt" \
            else ""
        fix = (f"give it{yaml} the 'synset:' you mean or a 'parent:' naming the concept it "
               "belongs under")
        who = f"{labelset.name} '{placed.label}' (id {placed.label_id})"
        if at_top:
            beside = [c for c in self.graph.successors(self.root) if c != placed.concept]
            return (f"{who} went to the top of the tree, beside "
                    f"{', '.join(beside[:3]) or 'nothing'}: WordNet puts no concept of the "
                    f"tree above {sense}; {fix}")
        above = self.parent(placed.under)
        kind = self.graph.nodes[placed.under].get("synset") or placed.under
        return (f"{who} went below {owners[0]}'s '{placed.under}', a label with nothing "
                f"below it before: {sense}, is a kind of {kind} in WordNet, so "
                f"{owners[0]}'s '{placed.under}' is split; if yours is not one, {fix} "
                f"(such as '{above}')")

    def _place(self, label: Label, labelset: LabelSet, resolve_parent, where: str,
               rep: DatasetReport, local: dict[str, str]
               ) -> tuple[str, str, str, str | None, bool]:
        """(concept, how, the how in words, the concept it went under, whether that concept
        had nothing below it before: False where the label joined a concept)."""
        if label.synset and label.synset in self.by_synset:
            rep.joined += label.used
            concept = self.by_synset[label.synset]
            return (concept, "joined", f"same synset as '{concept}'", self.parent(concept),
                    False)
        adopt: list[str] = []
        if label.parent:
            parent = resolve_parent(label.parent, where, label.synset)
            how, detail = "parent", f"parent: {label.parent}"
            rep.explicit += label.used
            if label.synset and label.parent not in local:
                # A parent from outside this label set names a region of the tree; WordNet may
                # place the label deeper in it. (The set's own groups are followed as given.)
                above = self.hypernyms(label.synset)
                inside = [n for n in nx.descendants(self.graph, parent)
                          if self.graph.nodes[n].get("synset") in above]
                if inside:
                    order = self.order()
                    parent = max(inside, key=lambda n: (self.depth(n), -order[n]))
                    detail += f", WordNet placed it deeper, under '{parent}'"
        elif label.synset:
            parent, adopt = self.placement(label.synset, where)
            how = "WordNet"
            ceiling = self.graph.nodes[parent].get("synset")
            detail = (f"below {ceiling}" if parent != self.root else
                      "under the root, nothing above it")
            if adopt:
                detail += f", above {', '.join(adopt[:3])}" + (", ..." if len(adopt) > 3 else "")
        else:
            raise UserError(f"{where}: no synset and no parent; give it a 'synset:' "
                            "(like car.n.01) or a 'parent:'")
        if not label.synset:
            # Without a synset, the same name under the same parent is the same concept
            # (Mapillary v1.2 and v2.0 'bike lane', both under road).
            for child in self.graph.successors(parent):
                if child == label.concept_name and not self.graph.nodes[child].get("synset"):
                    rep.joined += label.used
                    return child, "joined", f"same name under '{parent}'", parent, False
        fitted = self.within_depth(parent)
        if fitted != parent:
            self.notes.append(f"{labelset.name} '{label.name}' placed under '{fitted}' instead "
                              f"of '{parent}' to keep the depth within {self.max_depth}")
            detail += f"; moved up to '{fitted}' to keep the depth within {self.max_depth}"
            parent, adopt = fitted, []
        rep.new_concepts += label.used
        name = self.unique_name(label.concept_name, label.synset, labelset.name)
        was_leaf = self.graph.out_degree(parent) == 0
        return self.add(name, label.synset, parent, adopt), how, detail, parent, was_leaf

    # -------------------------------------------------------------------------- WordTree

    def add_intermediates(self, report: MergeReport) -> None:
        queue = [self.root]
        while queue:
            node = queue.pop(0)
            while self.group_once(node, report):
                pass
            queue.extend(self.graph.successors(node))

    def group_once(self, node: str, report: MergeReport) -> bool:
        ceiling = self.graph.nodes[node].get("synset")
        children = list(self.graph.successors(node))
        if not ceiling or len(children) < 3:
            return False
        budget = self.max_depth - self.depth(node) - 1   # depth left below a new intermediate
        members: dict[str, list[str]] = {}
        placed = 0      # children WordNet can place below the ceiling at all
        for child in children:
            synset = self.graph.nodes[child].get("synset")
            if not synset or child in self.frozen:
                continue
            between = self.between(ceiling, synset)
            placed += bool(between) or ceiling in self.hypernyms(synset)
            if self.height(child) + 1 > budget:
                continue
            for candidate in between:
                members.setdefault(candidate, []).append(child)
        options = []
        for candidate, grouped in members.items():
            # A group of all the children WordNet places says nothing new ('vertebrate' for
            # bird + mammals): it must hold two or more, but not all of them.
            if candidate in self.by_synset or not 2 <= len(grouped) < placed:
                continue
            depth = self.wn.synset(candidate).min_depth()
            if depth >= MIN_INTERMEDIATE_WORDNET_DEPTH:
                # Most children grouped first; among equal groups the most general name
                # ('mammal' rather than 'placental'), then alphabetical for determinism.
                options.append(((-len(grouped), depth, candidate), candidate, grouped))
        if not options:
            return False
        _, candidate, grouped = min(options)
        name = self.unique_name(self.wn.synset(candidate).lemma_names()[0].replace("_", " "),
                                candidate, "wordnet")
        self.add(name, candidate, node, adopt=grouped, kind="wordnet")
        report.intermediates.append(name)
        return True

    def between(self, ceiling: str, synset: str) -> set[str]:
        """Synsets strictly between ``ceiling`` and ``synset`` on the paths that pass it."""
        found = set()
        for path in self.wn.synset(synset).hypernym_paths():
            names = [s.name() for s in path]
            if ceiling in names:
                found.update(names[names.index(ceiling) + 1:-1])
        return found

    # -------------------------------------------------------------------------- cleanup

    def fix_single_children(self, report: MergeReport, final: bool = True) -> None:
        """Leave no concept with a single child: no neuron could choose that child.

        A concept without labels that has one child is spliced out (after every label set, so
        that later labels find the depth it freed). At the end, concepts without labels and
        without children are dropped, and a labelled concept with one child gets a remainder
        sibling '<name>-other' (COCO-Stuff's own convention for 'the rest of this group'), so
        its neuron chooses between the child and the rest.
        """
        while True:
            for node in nx.dfs_postorder_nodes(self.graph, self.root):
                children = list(self.graph.successors(node))
                if len(children) > 1 or (node == self.root and not children):
                    continue
                data = self.graph.nodes[node]
                if not children and not final:
                    continue
                if node != self.root and node not in self.frozen and not data["labels"] \
                        and data["kind"] != "other":
                    self.splice(node)
                    report.spliced.append(node)
                elif not children or not final:
                    continue
                elif children[0] not in self.frozen and \
                        not self.graph.nodes[children[0]]["labels"] and \
                        self.graph.nodes[children[0]]["kind"] != "other":
                    self.splice(children[0])
                    report.spliced.append(children[0])
                else:
                    name = self.unique_name(f"{node}-other", None, "other")
                    self.add(name, None, node, kind="other")
                    report.others.append(name)
                break          # the graph changed: walk it again
            else:
                return

    def splice(self, node: str) -> None:
        """Remove a concept, its children taking its place under its parent."""
        parent = self.parent(node)
        siblings = list(self.graph.successors(parent))
        position = siblings.index(node)
        siblings[position:position + 1] = list(self.graph.successors(node))
        synset = self.graph.nodes[node].get("synset")
        self.graph.remove_node(node)
        if synset:
            self.by_synset.pop(synset, None)
        self.set_children(parent, siblings)

    notes: list[str]


def _rebased(tree: ConceptTree, output_dir: Path | None) -> dict:
    """A tree's datasets, their label-set files named relative to ``output_dir``."""
    from dsspn_cli.hierarchy.labelset import builtin_labelsets

    out = {}
    for name, info in tree.datasets.items():
        info = dict(info)
        ref = str(info.get("labelset", name))
        beside = Path(tree.source).parent / ref if tree.source else Path(ref)
        if ref.lower() not in builtin_labelsets() and beside.is_file():
            info["labelset"] = (str(beside.resolve()) if output_dir is None else
                                os.path.relpath(beside.resolve(), Path(output_dir).resolve()))
        out[name] = info
    return out


def _reference(labelset: LabelSet, output_dir: Path | None) -> str:
    path = Path(labelset.source)
    if not path.is_file():
        return labelset.source                 # a built-in, by name
    if output_dir is None:
        return str(path.resolve())
    return os.path.relpath(path.resolve(), Path(output_dir).resolve())


@lru_cache(maxsize=1)
def _shipped_concepts() -> frozenset[str]:
    """Concept names of the shipped tree: parents a built-in label set may name by name."""
    from dsspn_cli.hierarchy.tree import read_graph
    from dsspn_cli.resources import default_tree_path

    path = default_tree_path()
    return frozenset(read_graph(path)[0]) if path.exists() else frozenset()


def _labels_in_order(labelset: LabelSet) -> list[Label]:
    """Labels by id, except that a label naming another label as parent comes after it."""
    by_name = {item.name: item for item in labelset.labels}
    done: set[str] = set()
    ordered: list[Label] = []

    def visit(item: Label):
        if item.name in done:
            return
        done.add(item.name)
        if item.parent in by_name:
            visit(by_name[item.parent])
        if not item.ignore:
            ordered.append(item)

    for item in sorted(labelset.labels, key=lambda item: item.id):
        visit(item)
    return ordered


def _groups_in_order(labelset: LabelSet):
    """Groups with their parents first."""
    groups = {group.name: group for group in labelset.groups}
    done: set[str] = set()
    ordered = []

    def visit(group):
        if group.name in done:
            return
        if group.parent in groups:
            visit(groups[group.parent])
        done.add(group.name)
        ordered.append(group)

    for group in labelset.groups:
        visit(group)
    return ordered


def merge_labelsets(labelsets: list[LabelSet], wn, max_depth: int = 5,
                    output_dir: Path | None = None, onto: ConceptTree | None = None
                    ) -> tuple[ConceptTree, MergeReport]:
    """Merge label sets (the first one is the skeleton) into a concept tree.

    The tree names each dataset's label set: built-ins by name, files by a path relative to
    ``output_dir`` (where the tree will be written), so tree and label sets can move together.

    ``onto``: an existing tree the label sets are placed into without moving any of its
    concepts (each keeps its ancestors, so every neuron of a model trained on it survives,
    with its children or more); new concepts go below or beside them.
    """
    if max_depth < 1:
        raise UserError(f"--max-depth {max_depth}: must be 1 or more")
    names = [ls.name for ls in labelsets]
    for name in names:
        if names.count(name) > 1:
            raise UserError(f"dataset '{name}' is given twice; name each label set once")
        if onto is not None and name in onto.datasets:
            raise UserError(f"dataset '{name}' is already in {onto.source or 'the tree'}; "
                            "merge a label set it does not have")
    if onto is not None:
        max_depth = max(max_depth, onto.height)
    report = MergeReport()
    builder = _Builder(wn, max_depth, onto)
    builder.notes = report.notes
    for i, labelset in enumerate(labelsets):
        given = {item.id for item in labelset.labels if item.synset}
        labelset, ambiguous = resolve_synsets(labelset, wn)
        builder.by_name.update((labelset.name, item.id) for item in labelset.labels
                               if item.synset and item.id not in given)
        report.notes.extend(ambiguous)
        builder.add_labelset(labelset, base=(i == 0 and onto is None), report=report)
    builder.add_intermediates(report)
    builder.fix_single_children(report)
    for placed in builder.placements:
        placed.parent = builder.parent(placed.concept) if placed.concept in builder.graph \
            else None
    report.placements, report.warnings = builder.placements, builder.warnings
    for _, data in builder.graph.nodes(data=True):
        data["labels"] = {k: sorted(v) for k, v in data["labels"].items()}
    datasets = dict(_rebased(onto, output_dir)) if onto is not None else {}
    datasets.update({ls.name: {"labelset": _reference(ls, output_dir), "title": ls.title,
                               "ignore_index": ls.ignore_index} for ls in labelsets})
    tree = ConceptTree(builder.graph, datasets, max_depth)
    return tree, report
