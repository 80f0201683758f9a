"""Property-based fuzzing of the label-set and concept-tree readers.

The project rule: bad input gives a one-line ``UserError`` that names the file, never another
exception (KeyError, TypeError, RecursionError, networkx errors...). Every property here feeds
arbitrary or mutated input to a reader and accepts exactly two outcomes: a valid result, or such
a ``UserError``. Valid results must also survive being written and read back unchanged.

Runs are derandomized (same examples every run, no example database), so CI is deterministic.
Regressions found by fuzzing are kept as ``@example``s.
"""

from __future__ import annotations

import copy
import datetime
import json
from pathlib import Path

import networkx as nx
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dsspn_cli.errors import UserError
from dsspn_cli.hierarchy.labelset import (
    MAX_LABEL_ID,
    SYNSET_NAME,
    LabelSet,
    load_labelset,
    name_problem,
    parse_labelset,
    read_text_labelset,
)
from dsspn_cli.hierarchy.tree import (
    ConceptTree,
    graph_from_node_link,
    graph_from_yaml,
    load_tree,
    read_graph,
)

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "hierarchies" / "dsspn-four-datasets.yaml"


def fuzz(examples: int):
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow, HealthCheck.data_too_large])


def one_line_user_error(exc: UserError, path) -> None:
    message = str(exc)
    assert message.strip(), "empty UserError message"
    assert len(message.splitlines()) == 1, f"UserError spans several lines: {message!r}"
    if path is not None:
        assert Path(path).name in message, f"UserError does not name the file: {message!r}"


def attempt(path, call, *args):
    """``call(*args)``: its result, or None after checking the UserError it raised."""
    try:
        return call(*args)
    except UserError as exc:
        one_line_user_error(exc, path)
        return None


# ------------------------------------------------------------------------------ strategies

SMALL_NAMES = st.sampled_from(["a", "b", "c", "g", "h", "car", "entity", " a ", ""])
SYNSETS = st.sampled_from(["car.n.01", "vehicle.n.01", "entity.n.01", "car.n.00", "car.v.01",
                           "car"])
SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(-2, 70000)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
           | SMALL_NAMES | SYNSETS)
KEYS = st.sampled_from(["id", "name", "synset", "parent", "ignore", "used", "synonyms", "labels",
                        "groups", "children", "kind", "format", "version", "datasets", "tree",
                        "nodes", "edges", "links", "graph", "source", "target", "max_depth",
                        "ignore_index", "labelset", "title", "aliases"]) | st.text(max_size=6)
ANY_DATA = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(KEYS | st.integers(), inner,
                                                                 max_size=5),
    max_leaves=25)

# Concepts, labels and datasets named with arbitrary text: quoting, line breaks, YAML keywords.
ODD_NAMES = st.sampled_from(["null", "yes", "1", "1.5", "~", "a: b", "- x", "#c", "a\nb", "'",
                             '"', "{x}", "[y]", "&a", "*a", "!t", "%", "@", "`", "\t", "x\x85y",
                             "x\u2028y", "\ufeffbom", "é", "\x00", "12:30", "0x1f", "2001-01-01"])


def printable_name(name: str) -> bool:
    """Whether a name may name a concept, label or dataset (one printable line): the rest
    are refused on load, and the round trips are about the names that load."""
    return name_problem(name) is None


TEXT_NAMES = (st.text(min_size=1, max_size=10) | ODD_NAMES).filter(printable_name)


def yaml_fragments():
    """Text built from YAML syntax fragments: tags, anchors, flow collections, odd scalars."""
    pieces = st.sampled_from([
        "name: x\n", "labels:\n", "- {id: 0, name: a}\n", "- {id: 1, name: b, parent: a}\n",
        "groups:\n", "- {name: g, parent: h}\n", "tree:\n", "  name: r\n", "  children:\n",
        "  - {name: a}\n", "datasets: {a: {labelset: a}}\n", "&a ", "*a", "!!int ", "!!float ",
        "!!bool ", "!!timestamp ", "!!binary ", "!!set ", "!!omap ", "!!str ", "!!null ",
        "!!python/object:os.system ", "2001-13-45", "2001-01-01 25:00:00", "1" * 5000, "0x",
        "{", "}", "[", "]", "? ", ": ", ", ", "\t", "%YAML 1.1\n", "---\n", "...\n", "\ufeff",
        "\x00", "'", '"', "\\", "# c\n", "- ", "  ", "\n", "<<: *a\n", "~", ".nan", ".inf",
        "id: ", "name: ", "ignore_index: ", "-1", "65536", "true", "é"])
    return st.lists(pieces | st.text(max_size=4), max_size=25).map("".join)


@st.composite
def mutated(draw, value, rounds: int = 3):
    """``value`` with a few random edits anywhere: replace, delete, insert, alias (the same
    object twice, as a YAML anchor would give) or a reference back to an enclosing container."""
    value = copy.deepcopy(value)
    for _ in range(draw(st.integers(1, rounds))):
        value = _mutate_once(draw, value, [])
    return value


def _mutate_once(draw, value, ancestors):
    containers = isinstance(value, (dict, list)) and len(value) > 0
    if containers and draw(st.integers(0, 3)) > 0:
        if isinstance(value, dict):
            key = draw(st.sampled_from(list(value)))
        else:
            key = draw(st.integers(0, len(value) - 1))
        value[key] = _mutate_once(draw, value[key], ancestors + [value])
        return value
    action = draw(st.sampled_from(["replace", "delete", "insert", "alias", "recurse", "wrap"]))
    if action == "replace" or not isinstance(value, (dict, list)):
        if action == "recurse" and ancestors:
            return draw(st.sampled_from(ancestors))
        return draw(ANY_DATA)
    if action == "delete" and value:
        if isinstance(value, dict):
            del value[draw(st.sampled_from(list(value)))]
        else:
            del value[draw(st.integers(0, len(value) - 1))]
    elif action == "insert":
        if isinstance(value, dict):
            value[draw(KEYS)] = draw(ANY_DATA)
        else:
            value.insert(draw(st.integers(0, len(value))), draw(ANY_DATA))
    elif action == "alias" and value:
        if isinstance(value, dict):
            value[draw(KEYS)] = value[draw(st.sampled_from(list(value)))]
        else:
            value.append(value[draw(st.integers(0, len(value) - 1))])
    elif action == "recurse" and ancestors:
        return draw(st.sampled_from(ancestors))
    elif action == "wrap":
        return draw(st.sampled_from([[value], {"name": "w", "children": [value]}]))
    return value


# --------------------------------------------------------------------------- label sets

@st.composite
def valid_labelset_docs(draw):
    """A label-set document that must load: unique ids and names, valid ignore_index, at least
    one mapped label, groups whose parents form chains ending at a synset or nothing."""
    name = draw(st.from_regex(r"[A-Za-z0-9][\w.-]{0,10}", fullmatch=True))
    ignore_index = draw(st.integers(0, MAX_LABEL_ID) | st.sampled_from([0, 255, MAX_LABEL_ID]))
    label_names = (st.text(min_size=1, max_size=10) | ODD_NAMES).map(str.strip).filter(
        printable_name)
    size = draw(st.integers(1, 10))
    ids = draw(st.lists(st.integers(-1, MAX_LABEL_ID) | st.integers(-1, 300), min_size=size,
                        max_size=size, unique=True))
    names = draw(st.lists(label_names, min_size=size, max_size=size, unique=True))
    groups = []
    for group_name in draw(st.lists(st.from_regex(r"[a-z]{1,6}-group", fullmatch=True),
                                    max_size=4, unique=True)):
        group = {"name": group_name}
        parent = draw(st.none() | st.sampled_from([g["name"] for g in groups] or ["x"])
                      | SYNSETS.filter(lambda s: bool(SYNSET_NAME.match(s))))
        if parent is not None and (parent in [g["name"] for g in groups] or
                                   SYNSET_NAME.match(parent)):
            group["parent"] = parent
        if draw(st.booleans()):
            group["synset"] = draw(SYNSETS.filter(lambda s: bool(SYNSET_NAME.match(s))))
        groups.append(group)
    labels = []
    for i, (label_id, label_name) in enumerate(zip(ids, names)):
        label = {"id": label_id, "name": label_name}
        if draw(st.booleans()):
            label["synset"] = draw(SYNSETS.filter(lambda s: bool(SYNSET_NAME.match(s))))
        parents = [g["name"] for g in groups] + names[:i] + ["road.n.01", "outdoor-things"]
        if draw(st.booleans()):
            label["parent"] = draw(st.sampled_from(parents))
        if label_id == ignore_index or draw(st.integers(0, 4)) == 0:
            label["ignore"] = True
        elif draw(st.integers(0, 5)) == 0:
            label["used"] = False
        if draw(st.booleans()):
            label["train_id"] = draw(st.integers(0, 255))
        labels.append(label)
    mapped = [label for label in labels if not label.get("ignore") and label.get("used", True)]
    if not mapped:
        candidates = [label for label in labels if label["id"] != ignore_index]
        if not candidates:
            labels.append({"id": (ignore_index + 1) % (MAX_LABEL_ID + 1), "name": "\u2022extra"})
        else:
            candidates[0].pop("ignore", None)
            candidates[0].pop("used", None)
    doc = {"name": name, "ignore_index": ignore_index, "labels": labels}
    if groups:
        doc["groups"] = groups
    if draw(st.booleans()):
        doc["aliases"] = draw(st.lists(st.text(max_size=6), max_size=3))
    if draw(st.booleans()):
        doc["title"] = draw(st.text(max_size=20))
    return doc


@st.composite
def labelset_like_docs(draw):
    """Documents shaped like label sets, with junk where a field's type or value matters."""
    label = st.fixed_dictionaries({}, optional={
        "id": st.integers(-3, 70000) | st.sampled_from([0, 1, 255]) | ANY_DATA,
        "name": SMALL_NAMES | TEXT_NAMES | ANY_DATA,
        "synset": SYNSETS | ANY_DATA, "parent": SMALL_NAMES | SYNSETS | ANY_DATA,
        "ignore": st.booleans() | ANY_DATA, "used": st.booleans() | ANY_DATA,
        "synonyms": st.lists(st.text(max_size=4), max_size=2) | ANY_DATA,
        "readable": ANY_DATA}) | ANY_DATA
    group = st.fixed_dictionaries({"name": SMALL_NAMES | ANY_DATA}, optional={
        "parent": SMALL_NAMES | SYNSETS | ANY_DATA, "synset": SYNSETS | ANY_DATA}) | ANY_DATA
    return draw(st.fixed_dictionaries({}, optional={
        "name": st.sampled_from(["x", "coco", "a-b.c_d", "x\n", "-x"]) | ANY_DATA,
        "title": st.text(max_size=8) | ANY_DATA,
        "aliases": st.lists(st.text(max_size=4), max_size=2) | ANY_DATA,
        "ignore_index": st.integers(-2, 70000) | st.sampled_from([0, 255]) | ANY_DATA,
        "labels": st.lists(label, max_size=6) | ANY_DATA,
        "groups": st.lists(group, max_size=4) | ANY_DATA,
    }))


def check_labelset(labelset: LabelSet) -> None:
    """What every label set a reader returns must satisfy."""
    import re

    assert isinstance(labelset, LabelSet)
    assert isinstance(labelset.name, str) and labelset.name
    assert re.fullmatch(r"[A-Za-z0-9][\w.-]*", labelset.name) or labelset.source.endswith(
        (".txt", labelset.name)), labelset.name
    assert isinstance(labelset.title, str)
    assert type(labelset.ignore_index) is int and 0 <= labelset.ignore_index <= MAX_LABEL_ID
    ids = [label.id for label in labelset.labels]
    names = [label.name for label in labelset.labels]
    assert all(type(i) is int and -1 <= i <= MAX_LABEL_ID for i in ids)
    assert len(set(ids)) == len(ids) and len(set(names)) == len(names)
    assert all(isinstance(n, str) and n and n == n.strip() for n in names)
    assert labelset.mapped_labels
    assert all(label.id != labelset.ignore_index for label in labelset.mapped_labels)
    assert all(isinstance(g.name, str) for g in labelset.groups)
    assert all(isinstance(a, str) for a in labelset.aliases)
    labelset.max_id  # noqa: B018 - must not raise


LAUGHS = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 10))
LAUGHS = "l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n" + LAUGHS


@fuzz(300)
@given(data=ANY_DATA | labelset_like_docs())
@example(data={"labels": [{"id": [[[]]] * 3, "name": "a"}]})
@example(data={"name": "x\n", "labels": [{"id": 0, "name": "a"}]})
@example(data={"labels": [{"id": 0, "name": "a\nb"}, {"id": 1, "name": "a\nb"}]})
@example(data={"labels": [{"id": 0, "name": "a"}], "groups": [{"name": "g\u2028"}] * 2})
@example(data={"labels": [{"id": 0, "name": "a"}], "title": {"deep": [[[[1]]]]}})
def test_parse_labelset_gives_labelset_or_user_error(data):
    labelset = attempt("fuzz.yaml", parse_labelset, data, "fuzz.yaml")
    if labelset is not None:
        check_labelset(labelset)


@fuzz(150)
@given(doc=valid_labelset_docs().flatmap(lambda doc: mutated(doc, rounds=3)))
def test_mutated_labelset_gives_labelset_or_user_error(doc):
    labelset = attempt("fuzz.yaml", parse_labelset, doc, "fuzz.yaml")
    if labelset is not None:
        check_labelset(labelset)


def test_deeply_nested_labelset_values_give_user_error():
    deep = []
    for _ in range(20000):
        deep = [deep]
    for doc in [{"name": deep, "labels": [{"id": 0, "name": "a"}]},
                {"labels": [{"id": deep, "name": "a"}]},
                {"labels": [{"id": 0, "name": "a", "synset": deep}]},
                {"labels": [{"id": 0, "name": "a"}], "title": deep}]:
        with pytest.raises(UserError) as info:
            parse_labelset(doc, "deep.yaml")
        one_line_user_error(info.value, "deep.yaml")


@pytest.mark.parametrize("field", ["name", "title", "id", "synset", "parent", "aliases"])
def test_billion_laughs_in_a_labelset_is_a_quick_user_error(tmp_path, field):
    """An exponentially aliased value must not be printed into the message (or anywhere)."""
    labels = "labels:\n- {id: 0, name: a}\n"
    if field in ("id", "synset", "parent"):
        labels = f"labels:\n- {{id: 0, name: a, {field}: *l9}}\n" if field != "id" else \
            "labels:\n- {id: *l9, name: a}\n"
    head = f"{field}: *l9\n" if field in ("name", "title", "aliases") else ""
    path = tmp_path / "laughs.yaml"
    path.write_text(LAUGHS + head + labels)
    with pytest.raises(UserError) as info:
        load_labelset(path)
    one_line_user_error(info.value, path)


@fuzz(250)
@given(content=st.binary(max_size=200) | yaml_fragments().map(lambda t: t.encode("utf-8"))
       | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
       suffix=st.sampled_from([".yaml", ".yml", ".txt", "", ".YAML", ".csv"]))
@example(content=b"labels: [{id: 0, name: a}]\nname: 2001-13-45\n", suffix=".yaml")
@example(content=b"name: !!int abc\n", suffix=".yaml")
@example(content=b"name: !!timestamp x\n", suffix=".yml")
@example(content=b"name: !!bool maybe\n", suffix=".yaml")
@example(content=b"!!int", suffix=".yaml")
@example(content=b"ignore_index: " + b"9" * 5000 + b"\n", suffix=".yaml")
@example(content=b"\xff\xfe\x00bad utf-8\n", suffix=".txt")
@example(content=b"[" * 5000, suffix=".yaml")
@example(content=b"car\n\xed\xa0\x80\n", suffix="")
def test_labelset_files_give_labelset_or_user_error(tmp_path, content, suffix):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(content)
    labelset = attempt(path, load_labelset, path)
    if labelset is not None:
        check_labelset(labelset)


@fuzz(150)
@given(ref=st.text(max_size=30) | st.sampled_from(["~no-such-user-dsspn/x.yaml",
                                                   "~no-such-user-dsspn", "a\x00b.yaml", "/",
                                                   ".", "..", "COCO", "city"]))
@example(ref="~no-such-user-dsspn/labels.yaml")
def test_labelset_references_give_labelset_or_user_error(ref):
    labelset = attempt(None, load_labelset, ref)
    if labelset is not None:
        check_labelset(labelset)


def test_text_labelset_with_too_many_classes_is_user_error(tmp_path):
    path = tmp_path / "many.txt"
    path.write_text("".join(f"c{i}\n" for i in range(MAX_LABEL_ID + 1)))
    with pytest.raises(UserError, match="many.txt: .*class names") as info:
        read_text_labelset(path)
    one_line_user_error(info.value, path)
    path.write_text("".join(f"c{i}\n" for i in range(MAX_LABEL_ID)))
    assert len(read_text_labelset(path).labels) == MAX_LABEL_ID


@fuzz(120)
@given(doc=valid_labelset_docs())
def test_valid_labelset_round_trips_through_yaml(tmp_path, doc):
    path = tmp_path / "round.yaml"
    # allow_unicode=False: PyYAML writes NEL/LS/PS raw otherwise, and reads them back folded.
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=False), encoding="utf-8")
    labelset = load_labelset(path)
    check_labelset(labelset)
    assert labelset.name == doc["name"]
    assert labelset.ignore_index == doc["ignore_index"]
    assert [(label.id, label.name) for label in labelset.labels] == [
        (label["id"], label["name"]) for label in doc["labels"]]
    assert [(label.synset, label.parent, label.ignore, label.used) for label in labelset.labels] \
        == [(label.get("synset"), label.get("parent"), label.get("ignore", False),
             label.get("used", True)) for label in doc["labels"]]
    assert [label.extra for label in labelset.labels] == [
        {k: v for k, v in label.items() if k == "train_id"} for label in doc["labels"]]
    assert [(g.name, g.parent, g.synset) for g in labelset.groups] == [
        (g["name"], g.get("parent"), g.get("synset")) for g in doc.get("groups", [])]
    assert labelset.aliases == doc.get("aliases", [])


@fuzz(100)
@given(names=st.lists(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1,
                              max_size=12).map(str.strip).filter(
                                  lambda n: n and not n.startswith("#") and
                                  printable_name(n)), min_size=1, max_size=20,
                      unique=True),
       blank=st.sampled_from(["", "\n", "# comment\n", "   \n"]))
def test_valid_text_labelset_round_trips(tmp_path, names, blank):
    path = tmp_path / "classes.txt"
    path.write_text(blank + "".join(f"{name}\n{blank}" for name in names), encoding="utf-8")
    labelset = load_labelset(path)
    assert [(label.id, label.name) for label in labelset.labels] == list(enumerate(names))
    assert labelset.ignore_index == 255


# -------------------------------------------------------------------------------- trees

DATASET_INFO = st.fixed_dictionaries(
    {"labelset": st.text(min_size=1, max_size=8), "ignore_index": st.integers(0, MAX_LABEL_ID)},
    optional={"title": st.text(max_size=12)})


@st.composite
def tree_specs(draw, max_nodes: int = 20):
    """A random valid tree as plain data (readable when hypothesis reports it): nodes as
    (name, parent index, synset, kind, labels) with unique names, datasets, max_depth."""
    size = draw(st.integers(1, max_nodes))
    names = draw(st.lists(TEXT_NAMES, min_size=size, max_size=size, unique=True))
    datasets = draw(st.dictionaries(TEXT_NAMES | st.sampled_from(["coco", "ade"]), DATASET_INFO,
                                    max_size=3))
    label_keys = st.sampled_from(sorted(datasets) + ["unknown-dataset"])
    nodes = []
    for i, name in enumerate(names):
        nodes.append((name, draw(st.integers(0, i - 1)) if i else None,
                      draw(st.none() | SYNSETS | st.text(min_size=1, max_size=8)),
                      draw(st.sampled_from(["concept", "wordnet", "other"])
                           | st.text(min_size=1, max_size=6)),
                      draw(st.dictionaries(label_keys, st.lists(st.integers(-1, MAX_LABEL_ID),
                                                                max_size=3), max_size=2))))
    return nodes, datasets, draw(st.integers(0, 8))


def build_tree(spec) -> ConceptTree:
    nodes, datasets, max_depth = spec
    graph = nx.DiGraph()
    for name, parent, synset, kind, labels in nodes:
        graph.add_node(name, synset=synset, kind=kind, labels=copy.deepcopy(labels))
        if parent is not None:
            graph.add_edge(nodes[parent][0], name)
    return ConceptTree(graph, copy.deepcopy(datasets), max_depth=max_depth)


def concept_trees(max_nodes: int = 20):
    return tree_specs(max_nodes).map(build_tree)


def structure(tree: ConceptTree):
    """Everything a tree file stores, in a comparable form."""
    nodes = [(name, tree.parent(name), tree.children(name), tree.node(name).get("synset"),
              tree.node(name).get("kind", "concept"), tree.labels(name)) for name in tree.names]
    return nodes, tree.datasets, tree.max_depth


def check_tree(tree: ConceptTree, tmp_path=None) -> None:
    """A tree a reader accepted is usable: every query works, and it writes and reads back
    unchanged in both formats."""
    assert isinstance(tree, ConceptTree) and len(tree) == tree.graph.number_of_nodes()
    for name in tree.names:
        assert isinstance(name, str)
        tree.ancestors(name)
        assert isinstance(tree.node(name).get("kind", "concept"), str)
        synset = tree.node(name).get("synset")
        assert synset is None or isinstance(synset, str)
        for dataset, ids in tree.labels(name).items():
            assert isinstance(dataset, str)
            assert all(type(i) is int and -1 <= i <= MAX_LABEL_ID for i in ids)
    tree.by_synset()
    tree.neurons  # noqa: B018
    tree.largest_fanout()
    for dataset in tree.datasets:
        assert isinstance(dataset, str)
        tree.label_map(dataset)
    again = ConceptTree(*graph_from_node_link(json.loads(json.dumps(tree.to_node_link())),
                                              "again.json"))
    assert structure(again) == structure(tree)
    again = ConceptTree(*graph_from_yaml(yaml.safe_load(tree.to_yaml_text()), "again.yaml"))
    assert structure(again) == structure(tree)


def tree_doc(tree: ConceptTree) -> dict:
    return yaml.safe_load(tree.to_yaml_text())


SHIPPED_DOC = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))


@st.composite
def tree_mutations(draw, doc):
    """A tree document with one of the edits people (or tools) get wrong."""
    doc = copy.deepcopy(doc)
    nodes, stack = [], [(doc["tree"], [])]
    while stack:
        node, ancestors = stack.pop()
        nodes.append((node, ancestors))
        for child in node.get("children") or []:
            stack.append((child, ancestors + [node]))
    node, ancestors = draw(st.sampled_from(nodes))
    others = [other for other, _ in nodes if other is not node]
    kind = draw(st.sampled_from(["cycle", "self", "duplicate", "unknown-dataset", "children",
                                 "format", "version", "max_depth", "label-ids", "alias",
                                 "datasets", "kind", "synset", "generic"]))
    if kind == "cycle" and ancestors:        # a node that is its own descendant by name
        node.setdefault("children", []).append({"name": draw(st.sampled_from(ancestors))["name"]})
    elif kind == "self":
        node.setdefault("children", []).append({"name": node["name"]})
    elif kind == "duplicate" and others:
        node["name"] = draw(st.sampled_from(others))["name"]
    elif kind == "unknown-dataset":
        node["labels"] = {"no-such-dataset": [1]}
    elif kind == "children":
        node["children"] = draw(ANY_DATA.filter(lambda v: not isinstance(v, list)))
    elif kind == "format":
        doc["format"] = draw(st.sampled_from(["dsspn-masking-tables", "", None, 1]) | ANY_DATA)
    elif kind == "version":
        doc["version"] = draw(st.sampled_from([0, 2, "1", True, 1.0, None]) | ANY_DATA)
    elif kind == "max_depth":
        doc["max_depth"] = draw(st.sampled_from([0, 1, -1, True, "5", 2.5, 10**30]) | ANY_DATA)
    elif kind == "label-ids":
        node["labels"] = {draw(st.sampled_from(sorted(map(str, doc.get("datasets") or {}))
                                               or ["a"])):
                          draw(st.lists(st.sampled_from(["x", 1.5, True, None, -2, 65536,
                                                         10**20, [1]]) | ANY_DATA, max_size=3))}
    elif kind == "alias" and ancestors:      # a YAML alias to an enclosing concept
        node.setdefault("children", []).append(draw(st.sampled_from(ancestors)))
    elif kind == "alias" and others:
        node.setdefault("children", []).append(draw(st.sampled_from(others)))
    elif kind == "datasets":
        doc["datasets"] = draw(ANY_DATA | st.dictionaries(
            ANY_DATA.filter(lambda k: not isinstance(k, (list, dict))),
            DATASET_INFO | st.fixed_dictionaries({}, optional={
                "labelset": ANY_DATA, "ignore_index": ANY_DATA, "title": ANY_DATA}), max_size=2))
    elif kind == "kind":
        node["kind"] = draw(ANY_DATA)
    elif kind == "synset":
        node["synset"] = draw(ANY_DATA)
    else:
        doc = draw(mutated(doc, rounds=2))
    return doc


def read_tree_doc(doc, path):
    """graph_from_yaml + ConceptTree, as load_tree does for a parsed file."""
    graph, datasets, max_depth = graph_from_yaml(doc, path)
    return ConceptTree(graph, datasets, max_depth, source=str(path))


def read_node_link_doc(doc, path):
    graph, datasets, max_depth = graph_from_node_link(doc, path)
    return ConceptTree(graph, datasets, max_depth, source=str(path))


@fuzz(200)
@given(doc=ANY_DATA | st.fixed_dictionaries({"tree": ANY_DATA}, optional={
    "datasets": ANY_DATA, "max_depth": ANY_DATA, "format": ANY_DATA, "version": ANY_DATA}))
@example(doc={"tree": {"name": "r", "kind": [1]}})
@example(doc={"tree": {"name": "r", "labels": {"a": [10**20]}}})
@example(doc={"tree": {"name": "r"}, "datasets": {1: {"labelset": "a"}}})
@example(doc={"tree": {"name": "r"}, "datasets": {"a": {"title": {"x": [1]}}}})
@example(doc={"tree": {"name": "r\nx", "children": [{"name": "r\nx"}]}})
@example(doc={"tree": {"name": "r"}, "format": "dsspn-masking-tables"})
@example(doc={"tree": {"name": "r"}, "version": 2})
@example(doc={"tree": {"name": "r", "kind": datetime.date(2020, 1, 1)}})
@example(doc={"tree": {"name": "r"}, "datasets": {"a": {"title": datetime.date(2020, 1, 2)}}})
def test_arbitrary_tree_yaml_docs_give_tree_or_user_error(doc):
    tree = attempt("fuzz.yaml", read_tree_doc, doc, "fuzz.yaml")
    if tree is not None:
        check_tree(tree)


@fuzz(200)
@given(doc=concept_trees(max_nodes=8).map(tree_doc).flatmap(tree_mutations))
def test_mutated_tree_docs_give_tree_or_user_error(doc):
    tree = attempt("fuzz.yaml", read_tree_doc, doc, "fuzz.yaml")
    if tree is not None:
        check_tree(tree)


@fuzz(40)
@given(doc=tree_mutations(SHIPPED_DOC))
def test_mutated_shipped_tree_gives_tree_or_user_error(doc):
    tree = attempt("fuzz.yaml", read_tree_doc, doc, "fuzz.yaml")
    if tree is not None:
        check_tree(tree)


NODE = st.fixed_dictionaries({}, optional={
    "id": st.integers(0, 4) | ANY_DATA, "name": SMALL_NAMES | TEXT_NAMES | ANY_DATA,
    "labels": st.dictionaries(st.sampled_from(["a", "b"]), st.lists(st.integers(-1, 9),
                                                                    max_size=2)) | ANY_DATA,
    "synset": SYNSETS | ANY_DATA, "kind": st.sampled_from(["concept", "wordnet"]) | ANY_DATA})
EDGE = st.fixed_dictionaries({"source": st.integers(0, 4) | ANY_DATA,
                              "target": st.integers(0, 4) | ANY_DATA}) | ANY_DATA


@fuzz(200)
@given(doc=ANY_DATA | st.fixed_dictionaries({"nodes": st.lists(NODE | ANY_DATA, max_size=6)},
                                            optional={"edges": st.lists(EDGE, max_size=6),
                                                      "links": st.lists(EDGE, max_size=6),
                                                      "graph": ANY_DATA | st.fixed_dictionaries(
                                                          {}, optional={"datasets": ANY_DATA,
                                                                        "max_depth": ANY_DATA}),
                                                      "directed": ANY_DATA,
                                                      "multigraph": ANY_DATA}))
@example(doc={"nodes": [{"id": 0, "name": "r", "synset": ["x"]}], "edges": []})
@example(doc={"nodes": [{"id": 0, "name": ["r"]}], "edges": []})
@example(doc={"nodes": [{"id": 0, "name": "r", "kind": {"a": 1}}], "edges": []})
@example(doc={"nodes": [{"id": 0, "name": "r"}, {"id": 1, "name": "a"}], "directed": False,
              "edges": [{"source": 1, "target": 0}]})
@example(doc={"nodes": [{"id": 0, "name": "r"}], "edges": [], "graph": {"datasets": {
    "a": {"labelset": "a", "title": [1, 2]}}}})
def test_arbitrary_node_link_docs_give_tree_or_user_error(doc):
    tree = attempt("fuzz.json", read_node_link_doc, doc, "fuzz.json")
    if tree is not None:
        check_tree(tree)


@fuzz(150)
@given(doc=concept_trees(max_nodes=8).map(lambda t: t.to_node_link()).flatmap(
    lambda doc: mutated(doc, rounds=3)))
def test_mutated_node_link_docs_give_tree_or_user_error(doc):
    tree = attempt("fuzz.json", read_node_link_doc, doc, "fuzz.json")
    if tree is not None:
        check_tree(tree)


@fuzz(200)
@given(content=st.binary(max_size=200) | yaml_fragments().map(lambda t: t.encode("utf-8")),
       suffix=st.sampled_from([".yaml", ".json", ".yml", ".JSON"]))
@example(content=b'{"nodes": [{"id": 0}], "edges": [], "graph": {"max_depth": '
         + b"9" * 5000 + b"}}", suffix=".json")
@example(content=b"[" * 100000, suffix=".json")
@example(content=b"\xff", suffix=".json")
@example(content=b"tree: {name: r}\nmax_depth: 2001-13-45\n", suffix=".yaml")
@example(content=b'{"nodes": [{"id": ' + b"[" * 990 + b"]" * 990 + b'}], "edges": []}',
         suffix=".json")
def test_tree_files_give_tree_or_user_error(tmp_path, content, suffix):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(content)
    tree = attempt(path, load_tree, path)
    if tree is not None:
        check_tree(tree)
    try:
        read_graph(path)
    except UserError as exc:
        one_line_user_error(exc, path)


def test_tree_file_that_is_a_folder_is_user_error(tmp_path):
    for name in ("folder.json", "folder.yaml"):
        (tmp_path / name).mkdir()
        with pytest.raises(UserError) as info:
            load_tree(tmp_path / name)
        one_line_user_error(info.value, name)


# ------------------------------------------------------------------------ deep nesting

def chain_tree(depth: int) -> ConceptTree:
    graph = nx.DiGraph()
    graph.add_node("n0", synset=None, labels={"a": [0]}, kind="concept")
    for i in range(1, depth):
        graph.add_node(f"n{i}", synset=None, labels={}, kind="concept")
        graph.add_edge(f"n{i - 1}", f"n{i}")
    return ConceptTree(graph, {"a": {"labelset": "a", "ignore_index": 255}})


def test_deep_yaml_tree_file_is_user_error_not_recursion(tmp_path):
    depth = 3000
    text = "tree:\n" + "".join("  " * (2 * i + 1) + f"name: n{i}\n" + "  " * (2 * i + 1)
                               + "children:\n" + "  " * (2 * i + 1) + "-\n"
                               for i in range(depth)) + "  " * (2 * depth + 1) + "name: leaf\n"
    for doc_text in (text, "tree: " + "{name: x, children: [" * depth + "]}" * depth):
        path = tmp_path / "deep.yaml"
        path.write_text(doc_text)
        with pytest.raises(UserError, match="deep.yaml") as info:
            load_tree(path)
        one_line_user_error(info.value, path)


def test_deep_trees_load_and_write_without_recursion_error(tmp_path):
    """Deep nesting is no RecursionError anywhere: a 5000-level document read from memory, a
    1500-level chain written as YAML (which then cannot be read back: a UserError) and JSON."""
    root = leaf = {"name": "n0"}
    for i in range(1, 5000):
        leaf["children"] = [{"name": f"n{i}"}]
        leaf = leaf["children"][0]
    tree = read_tree_doc({"tree": root}, "deep.yaml")
    assert len(tree) == 5000 and tree.depth("n4999") == 4999
    tree = chain_tree(1500)
    text = tree.to_yaml_text()
    assert text.count("name: n") == 1500
    path = tree.save(tmp_path / "deep.yaml")
    assert attempt(path, load_tree, path) is None or structure(load_tree(path)) == structure(tree)
    path = tree.save(tmp_path / "deep.json")
    assert structure(load_tree(path)) == structure(tree)


# --------------------------------------------------------------------------- round trips

def _one_node(name="0", kind="concept", datasets=None):
    return [(name, None, None, kind, {})], datasets or {}, 0


@fuzz(300)
@given(spec=tree_specs())
@example(spec=_one_node(datasets={"0: ": {"labelset": "0", "ignore_index": 0}}))
@example(spec=_one_node(datasets={"1": {"labelset": "0", "ignore_index": 0}}))
@example(spec=_one_node(datasets={"*0": {"labelset": "\\", "ignore_index": 0}}))
@example(spec=_one_node(datasets={"a b": {"labelset": "x\x85", "title": "\x1f"}}))
@example(spec=_one_node("=\xa0"))
@example(spec=_one_node("?\xa0"))
@example(spec=_one_node(":0", kind="\n"))
@example(spec=_one_node("\xa0x", kind="0}"))
@example(spec=([("r", None, None, "concept", {}), (":0", 0, None, "\n", {}),
                ("x y", 0, "car.n.01", "0{", {"a b": [1]})], {}, 3))
def test_generated_tree_round_trips_in_memory(spec):
    tree = build_tree(spec)
    assert structure(read_tree_doc(yaml.safe_load(tree.to_yaml_text()), "m.yaml")) \
        == structure(tree)
    assert structure(read_node_link_doc(tree.to_node_link(), "m.json")) == structure(tree)
    assert structure(read_node_link_doc(json.loads(json.dumps(tree.to_node_link())), "m.json")) \
        == structure(tree)


@fuzz(40)
@given(spec=tree_specs(max_nodes=10))
def test_generated_tree_saves_and_reloads_byte_identically(tmp_path, spec):
    tree = build_tree(spec)
    for suffix in (".yaml", ".json"):
        first = tree.save(tmp_path / f"first{suffix}")
        again = load_tree(first)
        assert structure(again) == structure(tree)
        second = again.save(tmp_path / f"second{suffix}")
        assert first.read_bytes() == second.read_bytes()
        assert tree.save(tmp_path / f"third{suffix}").read_bytes() == first.read_bytes()


def test_shipped_tree_rewrites_byte_identically(tmp_path):
    tree = load_tree(SHIPPED)
    text = SHIPPED.read_text(encoding="utf-8")
    header = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    assert tree.to_yaml_text(header) == text
    path = tree.save(tmp_path / "shipped.json")
    assert structure(load_tree(path)) == structure(tree)


# ------------------------------------------------------------------------------- cycles

@fuzz(100)
@given(tree=concept_trees(max_nodes=10), data=st.data())
@example(tree=chain_tree(2), data=None)
def test_cycle_in_node_link_is_user_error_naming_a_cycle(tree, data):
    doc = tree.to_node_link()
    ids = [node["id"] for node in doc["nodes"]]
    if data is None:            # the root's only child points back at the root
        doc["edges"].append({"source": 1, "target": 0})
    else:                       # an edge from a node to itself or to one of its ancestors
        node = data.draw(st.sampled_from(ids))
        up = [tree.index[a] for a in tree.ancestors(tree.names[node])] + [node]
        doc["edges"].append({"source": node, "target": data.draw(st.sampled_from(up))})
        if data.draw(st.booleans()):
            doc["edges"] = data.draw(st.permutations(doc["edges"]))
    with pytest.raises(UserError, match="cycle") as info:
        read_node_link_doc(doc, "cycle.json")
    one_line_user_error(info.value, "cycle.json")


def test_cycle_in_node_link_file_is_user_error(tmp_path):
    doc = {"directed": True, "multigraph": False, "graph": {},
           "nodes": [{"id": 0, "name": "r"}, {"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
           "edges": [{"source": 0, "target": 1}, {"source": 1, "target": 2},
                     {"source": 2, "target": 1}]}
    path = tmp_path / "cycle.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(UserError, match=r"cycle\.json: cycle: a -> b -> a"):
        load_tree(path)
