"""Reading and checking tree files: the YAML a person reads and edits, networkx node-link
JSON, the checks that refuse what is not a tree (cycles, two parents, repeated siblings,
unprintable names, malformed labels) with one line naming the file and the field, and the
label sets a tree's datasets came from. ``load_tree`` gives the ``ConceptTree`` of a file.
"""

from __future__ import annotations

import stat
from pathlib import Path

import networkx as nx

from dsspn_cli.errors import UserError, one_line, shown
from dsspn_cli.files import read_json, read_yaml
from dsspn_cli.hierarchy.labelset import MAX_LABEL_ID, name_problem, printable

FORMAT = "dsspn-concept-tree"
VERSION = 1


def structural_problems(graph: nx.DiGraph) -> list[str]:
    """Problems that make a graph not a tree: the reasons a tree cannot be loaded."""
    problems = [message for _, _, message in graph.graph.get("read_problems", [])]
    if graph.number_of_nodes() == 0:
        return problems + ["the tree is empty"]
    try:        # first: a cycle also shows as a missing root or as a node with two parents
        cycle = nx.find_cycle(graph)
        problems.append("cycle: " + " -> ".join(str(u) for u, _ in cycle) + f" -> {cycle[0][0]}")
    except nx.NetworkXNoCycle:
        pass
    roots = [n for n in graph if graph.in_degree(n) == 0]
    if len(roots) != 1:
        listed = ", ".join(map(str, roots[:4])) or "none"
        problems.append(f"the tree must have one root, found {len(roots)} ({listed})")
    for node in graph:
        if graph.in_degree(node) > 1:
            parents = ", ".join(map(str, graph.predecessors(node)))
            problems.append(f"concept '{node}' has several parents ({parents}): "
                            "names must be unique")
    problems.extend(f"concept '{printable(name)}': the name {problem}; names must be one "
                    "printable line" for name, problem in unprintable_names(graph))
    return problems


def unprintable_names(graph: nx.DiGraph) -> list[tuple[str, str]]:
    """(name, problem) of every concept whose name cannot be printed as one line: a line
    break would split a row of 'hierarchy show', an escape would reach the terminal."""
    found = []
    for node in graph:
        problem = name_problem(node) if isinstance(node, str) else "is not a string"
        if problem:
            found.append((str(node), problem))
    return found


def _error(message: str) -> UserError:
    """A UserError on one line, whatever names (with line breaks) the message quotes."""
    return UserError(one_line(message))


def _check_labels(value, where: str) -> dict[str, list[int]]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, list) and all(
                isinstance(i, int) and not isinstance(i, bool) for i in v)
            for k, v in value.items()):
        raise _error(f"{where}: field 'labels' must map dataset names to lists of label ids, "
                     "like {coco: [2], ade: [21]}")
    for key, ids in value.items():
        bad = [i for i in ids if not -1 <= i <= MAX_LABEL_ID]
        if bad:
            raise _error(f"{where}: labels.{key}: label id {shown(bad[0])} is not a label-map "
                         f"value; give ids from 0 to {MAX_LABEL_ID} (or -1)")
    return {k: list(v) for k, v in value.items()}


def _check_node(where: str, synset, kind) -> None:
    """The 'synset' and 'kind' of a concept, from either file format."""
    if synset is not None and not isinstance(synset, str):
        raise _error(f"{where}: field 'synset' must be a synset name like car.n.01")
    if not isinstance(kind, str):
        raise _error(f"{where}: field 'kind' is {shown(kind)}, not a name; write 'wordnet' or "
                     "'other', or remove it")


def _check_header(info: dict, path) -> None:
    """The file's 'format' and 'version', where it gives them."""
    if "format" in info and info["format"] != FORMAT:
        raise _error(f"{path}: field 'format' is {shown(info['format'])}, not {FORMAT}; give a "
                     "concept tree file (made with 'dsspn hierarchy merge')")
    version = info.get("version", VERSION)
    if type(version) is not int or version != VERSION:
        raise _error(f"{path}: field 'version' is {shown(version)}; this dsspn reads concept "
                     f"trees of version {VERSION}: write the tree again with it")


def graph_from_yaml(doc, path) -> tuple[nx.DiGraph, dict, int]:
    """Read the nested YAML tree into a graph without checking it is a tree.

    A name that appears twice becomes one node with two parents (or a cycle), and two
    siblings of one name become one node, recorded in ``graph.graph['read_problems']``, so
    that ``check`` can report them; loading for use rejects such graphs.
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("tree"), dict):
        raise _error(f"{path}: not a dsspn concept tree (no 'tree:' mapping); "
                     "make one with 'dsspn hierarchy merge'")
    _check_header(doc, path)
    graph = nx.DiGraph()
    stack = [(doc["tree"], None, "tree")]
    visited: set[int] = set()
    problems: list[tuple[str, str, str]] = []
    while stack:
        node, parent, where = stack.pop()
        if id(node) in visited:         # a YAML alias pointing back at its own ancestor
            raise _error(f"{path}: {where}: a concept contains itself or appears twice (YAML "
                         "anchor/alias); write the tree out without aliases")
        visited.add(id(node))
        if not isinstance(node, dict) or not isinstance(node.get("name"), str):
            raise _error(f"{path}: {where}: every concept needs a string 'name'; fix the tree")
        name = node["name"]
        where = f"concept '{name}'"
        synset, kind = node.get("synset"), node.get("kind", "concept")
        _check_node(f"{path}: {where}", synset, kind)
        labels = _check_labels(node.get("labels"), f"{path}: {where}")
        if name in graph:
            merged = graph.nodes[name].get("labels") or {}
            for key, ids in labels.items():
                merged.setdefault(key, []).extend(ids)
            graph.nodes[name]["labels"] = merged
        else:
            graph.add_node(name, synset=synset, labels=labels, kind=kind)
        if parent is not None:
            graph.add_edge(parent, name)
        children = node.get("children") or []
        if not isinstance(children, list):
            raise _error(f"{path}: {where}: field 'children' must be a list; fix the tree")
        problems.extend(_repeated_siblings(children, name))
        for i, child in reversed(list(enumerate(children))):
            stack.append((child, name, f"{where} children[{i}]"))
    # The stack pops in reverse, so re-add edges in the file's order of children.
    ordered = nx.DiGraph(read_problems=problems)
    ordered.add_nodes_from(graph.nodes(data=True))
    _add_edges_in_file_order(doc["tree"], ordered)
    return ordered, _check_datasets(doc.get("datasets"), path), _check_depth(
        doc.get("max_depth", 5), path)


def _repeated_siblings(children: list, parent: str) -> list[tuple[str, str, str]]:
    """Names given to two children of one concept: read as one concept, so recorded."""
    names = [child.get("name") for child in children if isinstance(child, dict)]
    repeated = sorted({n for n in names if isinstance(n, str) and names.count(n) > 1})
    return [("unique names", name, f"concept '{parent}' has {names.count(name)} children "
             f"named '{name}': they would be read as one concept; rename or merge them")
            for name in repeated]


def _node_link_problems(doc: dict, edges_key: str) -> list[tuple[str, str, str]]:
    """What networkx would silently mend in node-link data: two nodes with one id (merged
    into one) and edges to ids no node has (each would add an empty concept)."""
    problems, seen = [], {}
    for i, node in enumerate(doc["nodes"]):
        key = node.get("id")
        try:
            first = seen.setdefault(key, i)
        except TypeError:                # an unhashable id: networkx rejects it
            continue
        if first != i:
            problems.append(("unique ids", shown(key), f"nodes[{first}] and nodes[{i}] have "
                             f"the same id {shown(key)}: give every node its own id"))
    for i, edge in enumerate(doc.get(edges_key) or []):
        for end in ("source", "target") if isinstance(edge, dict) else ():
            try:
                known = edge.get(end) in seen
            except TypeError:
                continue
            if not known:
                problems.append(("defined nodes", shown(edge.get(end)), f"{edges_key}[{i}]: "
                                 f"{end} {shown(edge.get(end))} is not the id of a node; add "
                                 "the node or remove the edge"))
    return problems


def _check_datasets(datasets, path) -> dict:
    """The tree's 'datasets': name -> {labelset, title, ignore_index}."""
    if datasets is None:
        return {}
    if not isinstance(datasets, dict):
        raise _error(f"{path}: field 'datasets' must map dataset names to "
                     "{labelset: ..., ignore_index: ...}; fix the tree")
    for name, info in datasets.items():
        if not isinstance(name, str):
            raise _error(f"{path}: datasets: the name {shown(name)} is not a string; quote it "
                         "or use the dataset's label-set name")
        if name_problem(name):
            raise _error(f"{path}: datasets: the name '{printable(name)}' {name_problem(name)}; "
                         "use the dataset's label-set name")
        if not isinstance(info, dict):
            raise _error(f"{path}: datasets.{name} must be a mapping like {{labelset: "
                         f"{name}, ignore_index: 255}}; fix the tree")
        ignore = info.get("ignore_index", 255)
        if isinstance(ignore, bool) or not isinstance(ignore, int) or not 0 <= ignore <= 65535:
            raise _error(f"{path}: datasets.{name}.ignore_index must be an integer from 0 to "
                         "65535; fix the tree")
        if not isinstance(info.get("labelset", name), str):
            raise _error(f"{path}: datasets.{name}.labelset must be a label-set name or path")
        for key, value in info.items():     # written back as YAML and JSON: plain values only
            if not isinstance(key, str) or not isinstance(value, (str, int, float, type(None))):
                raise _error(f"{path}: datasets.{name}: field {shown(key)} must be a string or "
                             "a number, like title: COCO-Stuff; fix the tree")
    return datasets


def _check_depth(value, path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _error(f"{path}: field 'max_depth' must be a non-negative integer; fix the tree")
    return value


def _add_edges_in_file_order(root: dict, graph: nx.DiGraph) -> None:
    stack = [root]
    seen = set()
    while stack:
        node = stack.pop()
        name = node["name"]
        if id(node) in seen:
            continue
        seen.add(id(node))
        for child in node.get("children") or []:
            graph.add_edge(name, child["name"])
        stack.extend(reversed(node.get("children") or []))


def graph_from_node_link(doc, path) -> tuple[nx.DiGraph, dict, int]:
    """Read node-link JSON (``show --format json``) into a graph keyed by concept name."""
    if not isinstance(doc, dict) or not isinstance(doc.get("nodes"), list) or not all(
            isinstance(node, dict) for node in doc["nodes"]):
        raise _error(f"{path}: not node-link JSON (no 'nodes' list of objects); "
                     "write it with 'dsspn hierarchy show --format json'")
    edges_key = "edges" if "edges" in doc else "links"
    if not isinstance(doc.get(edges_key, []), list) or not isinstance(doc.get("graph", {}),
                                                                      dict):
        raise _error(f"{path}: malformed node-link JSON ('{edges_key}' must be a list and "
                     "'graph' an object); write it with 'dsspn hierarchy show --format json'")
    _check_header(doc.get("graph") or {}, path)
    # A tree is directed, whatever 'directed'/'multigraph' say: edges go source -> target.
    doc = {**doc, edges_key: doc.get(edges_key, []), "directed": True, "multigraph": False}
    try:
        raw = nx.node_link_graph(doc, directed=True, multigraph=False, edges=edges_key)
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError,
            nx.NetworkXError) as exc:
        raise _error(f"{path}: malformed node-link JSON ({exc.__class__.__name__}: "
                     f"{shown(exc.args[0]) if exc.args else ''}); "
                     "write it with 'dsspn hierarchy show --format json'") from None
    names = {}
    for node, data in raw.nodes(data=True):
        name = data.get("name", node)
        if isinstance(name, int) and not isinstance(name, bool):
            name = str(name)
        if not isinstance(name, str):
            raise _error(f"{path}: node {shown(node)}: the name {shown(name)} is not a string; "
                         "give every node a string 'name'")
        if name in names.values():
            raise _error(f"{path}: node {shown(node)}: duplicate name '{name}'; names must be "
                         "unique")
        names[node] = name
    graph = nx.DiGraph()
    for node, data in raw.nodes(data=True):
        where = f"{path}: node {shown(node)}"
        synset, kind = data.get("synset"), data.get("kind", "concept")
        _check_node(where, synset, kind)
        graph.add_node(names[node], synset=synset, kind=kind,
                       labels=_check_labels(data.get("labels"), where))
    for u, v in raw.edges():
        graph.add_edge(names[u], names[v])
    graph.graph["read_problems"] = _node_link_problems(doc, edges_key)
    info = doc.get("graph") or {}
    return graph, _check_datasets(info.get("datasets"), path), _check_depth(
        info.get("max_depth", 5), path)


def read_graph(path: str | Path) -> tuple[nx.DiGraph, dict, int]:
    """The raw graph of a YAML or node-link JSON tree file, not yet checked to be a tree."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        doc = read_json(path, "tree")
        return graph_from_node_link(doc, path)
    return graph_from_yaml(read_yaml(path, "concept tree"), path)


LABELSET_SUFFIXES = (".yaml", ".yml", ".txt")


def labelset_of(tree_path, info: dict, dataset: str):
    """The label set a tree's dataset came from: a built-in name, or a label-set file
    (.yaml, .yml or .txt) written relative to the tree file (or the current folder). A tree
    may come from anyone: a reference to any other file is refused, never read, so that no
    file's contents end up in a message or in tables.json."""
    from dsspn_cli.files import stat_path
    from dsspn_cli.hierarchy.labelset import builtin_labelsets, builtin_names, load_labelset

    ref = str((info or {}).get("labelset", dataset))
    if ref.lower() in builtin_labelsets():
        return load_labelset(ref)
    where = f"datasets.{dataset}.labelset"
    if Path(ref).suffix.lower() not in LABELSET_SUFFIXES:
        raise _error(f"{where}: {shown(ref)} is neither a built-in label set "
                     f"({', '.join(builtin_names())}) nor a label-set file (.yaml, .yml or "
                     ".txt); name one of those in the tree")
    beside = Path(tree_path).parent / ref if tree_path is not None else None
    if beside is not None and stat_path(beside) is not None:
        ref = str(beside)
    found = stat_path(ref, "read the label set")
    if found is not None and not stat.S_ISREG(found.st_mode):    # a FIFO would block
        raise _error(f"{where}: {shown(ref)} is not a regular file; name a label-set file")
    try:
        return load_labelset(ref)
    except UserError as exc:
        raise _error(f"{where}: {exc}") from None


def load_tree(path: str | Path | None = None):
    """The ``ConceptTree`` of a tree file (YAML or node-link JSON); the shipped four-dataset
    tree when None."""
    from dsspn_cli.hierarchy.tree import ConceptTree

    if path is None:
        from dsspn_cli.resources import default_tree_path

        path = default_tree_path()
        if not path.exists():
            raise UserError(f"{path}: the shipped tree is missing; run 'dsspn hierarchy merge "
                            f"coco ade cityscapes mapillary -o {path}'")
    graph, datasets, max_depth = read_graph(path)
    return ConceptTree(graph, datasets, max_depth, source=str(path))
