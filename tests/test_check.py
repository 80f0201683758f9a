import networkx as nx
from conftest import write_yaml

from dsspn_cli.hierarchy.check import check_graph
from dsspn_cli.hierarchy.labelset import load_labelset


def graph_of(edges, labels=None):
    graph = nx.DiGraph()
    graph.add_edges_from(edges)
    for node in graph:
        graph.nodes[node]["labels"] = (labels or {}).get(node, {})
    return graph


def rules(violations):
    return sorted({v.rule for v in violations})


def test_clean_tree_has_no_violation():
    graph = graph_of([("r", "a"), ("r", "b"), ("a", "c"), ("a", "d")])
    assert check_graph(graph, {}, 5, 4) == []


def test_each_structural_rule():
    assert rules(check_graph(graph_of([("r", "a"), ("r", "b"), ("x", "y"), ("x", "z")]),
                             {}, 5)) == ["one root"]
    assert "one parent" in rules(check_graph(graph_of(
        [("r", "a"), ("r", "b"), ("a", "c"), ("b", "c"), ("a", "d"), ("b", "e")]), {}, 5))
    assert "no cycle" in rules(check_graph(graph_of(
        [("r", "a"), ("r", "b"), ("a", "c"), ("c", "a"), ("c", "d")]), {}, 5))
    single = check_graph(graph_of([("r", "a"), ("r", "b"), ("a", "c")]), {}, 5)
    assert rules(single) == ["no single-child chain"] and single[0].concept == "a"
    deep = graph_of([("r", "a"), ("r", "b"), ("a", "c"), ("a", "d")])
    assert rules(check_graph(deep, {}, 1)) == ["depth"]
    assert len(check_graph(deep, {}, 1)) == 2
    assert rules(check_graph(deep, {}, 5, max_fanout=1)) == ["fan-out"]


def test_every_violation_is_reported_not_just_the_first():
    graph = graph_of([("r", "a"), ("r", "b"), ("a", "c"), ("b", "d"), ("d", "e"), ("d", "f")])
    violations = check_graph(graph, {}, 1, 1)
    assert rules(violations) == ["depth", "fan-out", "no single-child chain"]
    assert {v.concept for v in violations if v.rule == "no single-child chain"} == {"a", "b"}


def test_label_mapping_rules(tmp_path):
    path = write_yaml(tmp_path / "ds.yaml", {"name": "ds", "labels": [
        {"id": 0, "name": "a"}, {"id": 1, "name": "b"}, {"id": 2, "name": "c"},
        {"id": 3, "name": "void", "ignore": True}]})
    labelset = load_labelset(str(path))
    graph = graph_of([("r", "x"), ("r", "y")], labels={
        "x": {"ds": [0, 1, 3, 9]}, "y": {"ds": [1], "other": [0]}})
    messages = [v.message for v in check_graph(graph, {"ds": {}}, 5,
                                               labelsets={"ds": labelset})]
    assert any("label 2 'c' is not mapped" in m for m in messages)
    assert any("label 1 'b' is mapped 2 times" in m for m in messages)
    assert any("label 3 'void' is void" in m for m in messages)
    assert any("ds has no label id 9" in m for m in messages)
    assert any("dataset 'other'" in m for m in messages)
