"""Checks that a concept graph is a tree DSSPN can be built from.

Every problem is a ``Violation`` (rule, concept, message); ``check_graph`` lists all of them
instead of stopping at the first, so ``dsspn hierarchy check`` can show a full table.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import networkx as nx

from dsspn_cli.errors import UserError
from dsspn_cli.hierarchy.labelset import printable
from dsspn_cli.hierarchy.tree import unprintable_names


@dataclass(frozen=True)
class Violation:
    rule: str
    concept: str
    message: str


def _depths(graph: nx.DiGraph, root) -> dict:
    return nx.single_source_shortest_path_length(graph, root)


def check_graph(graph: nx.DiGraph, datasets: dict, max_depth: int | None = 5,
                max_fanout: int | None = None, labelsets: dict | None = None,
                tree_path=None) -> list[Violation]:
    """All violations of the tree rules.

    ``labelsets`` maps dataset name -> LabelSet; every label of each that is not void or unused
    must be mapped to exactly one concept. Datasets named in ``datasets`` whose label set is not
    given are loaded from the reference stored in the tree.
    """
    # What the file says that the graph cannot show (two siblings of one name read as one,
    # two nodes of one id, edges to no node): the readers record it.
    found = [Violation(*problem) for problem in graph.graph.get("read_problems", [])]
    roots = [n for n in graph if graph.in_degree(n) == 0]
    if len(roots) != 1:
        found.append(Violation("one root", ", ".join(map(str, roots[:5])) or "-",
                               f"{len(roots)} concepts have no parent; exactly one (the root) "
                               "may have none"))
    for node in graph:
        if graph.in_degree(node) > 1:
            parents = ", ".join(map(str, graph.predecessors(node)))
            found.append(Violation("one parent", str(node), f"has {graph.in_degree(node)} "
                                   f"parents ({parents})"))
    for cycle in itertools.islice(nx.simple_cycles(graph), 20):
        found.append(Violation("no cycle", str(cycle[0]),
                               " -> ".join(map(str, cycle + cycle[:1]))))
    for node in graph:
        if graph.out_degree(node) == 1:
            child = next(iter(graph.successors(node)))
            found.append(Violation("no single-child chain", str(node),
                                   f"has one child ('{child}'): no neuron can choose it; merge "
                                   "them or add a sibling"))
        if max_fanout is not None and graph.out_degree(node) > max_fanout:
            found.append(Violation("fan-out", str(node), f"{graph.out_degree(node)} children "
                                   f"(limit {max_fanout})"))
    for name, problem in unprintable_names(graph):
        found.append(Violation("printable names", printable(name), f"the name {problem}; "
                               "write it on one line, without control characters"))
    if len(roots) == 1 and max_depth is not None:
        for node, depth in _depths(graph, roots[0]).items():
            if depth > max_depth:
                found.append(Violation("depth", str(node), f"depth {depth} (limit {max_depth})"))

    found.extend(_label_violations(graph, datasets, labelsets or {}, tree_path))
    return found


def _label_violations(graph, datasets: dict, labelsets: dict, tree_path) -> list[Violation]:
    from dsspn_cli.hierarchy.tree import labelset_of

    found = []
    mapped: dict[str, dict[int, list[str]]] = {}
    for node, data in graph.nodes(data=True):
        for dataset, ids in (data.get("labels") or {}).items():
            for label_id in ids:
                mapped.setdefault(dataset, {}).setdefault(label_id, []).append(str(node))
    for dataset in sorted(set(mapped) - set(datasets) - set(labelsets)):
        found.append(Violation("label mapping", "-", f"labels of dataset '{dataset}' are "
                               "mapped, but the tree's 'datasets' does not list it"))
    for dataset, info in datasets.items():
        labelset = labelsets.get(dataset)
        if labelset is None:
            try:
                labelset = labelset_of(tree_path, info, dataset)
            except UserError as exc:
                found.append(Violation("label mapping", "-", f"dataset '{dataset}': {exc}"))
                continue
        concepts = mapped.get(dataset, {})
        for label in labelset.labels:
            where = concepts.get(label.id, [])
            if label.mapped and not where:
                found.append(Violation("label mapping", "-", f"{dataset} label {label.id} "
                                       f"'{label.name}' is not mapped to any concept"))
            elif len(where) > 1:
                found.append(Violation("label mapping", ", ".join(where), f"{dataset} label "
                                       f"{label.id} '{label.name}' is mapped {len(where)} times"))
            elif where and not label.mapped:
                why = "void (ignore: true)" if label.ignore else "never annotated (used: false)"
                found.append(Violation("label mapping", where[0], f"{dataset} label {label.id} "
                                       f"'{label.name}' is {why} but mapped"))
        known = {label.id for label in labelset.labels}
        for label_id in sorted(set(concepts) - known):
            found.append(Violation("label mapping", ", ".join(concepts[label_id]),
                                   f"{dataset} has no label id {label_id}"))
    return found

