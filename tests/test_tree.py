import json

import networkx as nx
import pytest

from dsspn_cli.errors import UserError
from dsspn_cli.hierarchy.tree import ConceptTree, load_tree, read_graph


def small_tree():
    graph = nx.DiGraph()
    graph.add_node("entity", synset="entity.n.01", labels={})
    for parent, child, labels in [("entity", "animal", {"a": [9]}), ("entity", "vehicle", {}),
                                  ("animal", "cat", {"a": [1]}), ("animal", "dog", {"a": [2]}),
                                  ("vehicle", "car", {"a": [3], "b": [7]}),
                                  ("vehicle", "bus", {"b": [8]})]:
        graph.add_node(child, synset=None, labels=labels)
        graph.add_edge(parent, child)
    return ConceptTree(graph, {"a": {"labelset": "a.yaml", "ignore_index": 255},
                               "b": {"labelset": "b.yaml", "ignore_index": 0}})


def test_concept_ids_are_depth_first_order():
    tree = small_tree()
    assert tree.names == ["entity", "animal", "cat", "dog", "vehicle", "car", "bus"]
    assert tree.id("car") == 5
    assert tree.neurons == ["entity", "animal", "vehicle"]
    assert tree.ancestors("cat") == ["entity", "animal"]
    assert tree.label_map("b") == {7: "car", 8: "bus"}
    assert tree.defines("b", "vehicle") and not tree.defines("b", "animal")


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_round_trip_keeps_everything(tmp_path, suffix):
    tree = small_tree()
    path = tree.save(tmp_path / f"t{suffix}")
    again = load_tree(path)
    assert again.names == tree.names
    assert again.datasets == tree.datasets
    for name in tree.names:
        assert again.labels(name) == tree.labels(name)
        assert again.node(name).get("synset") == tree.node(name).get("synset")


def test_node_link_json_fields():
    data = small_tree().to_node_link()
    node = next(n for n in data["nodes"] if n["name"] == "car")
    assert node["id"] == 5 and node["labels"] == {"a": [3], "b": [7]} and "synset" in node
    assert {"source": 4, "target": 5} in data["edges"]


def test_duplicate_name_in_yaml_is_rejected_on_load(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("tree:\n  name: entity\n  children:\n  - {name: a}\n  - name: b\n"
                    "    children:\n    - {name: a}\n    - {name: c}\n")
    graph, _, _ = read_graph(path)
    assert graph.in_degree("a") == 2
    with pytest.raises(UserError, match="dup.yaml: concept 'a' has several parents"):
        load_tree(path)


def write_cycle_json(path):
    """Node-link JSON with a cycle a -> b -> a below the root r."""
    doc = {"directed": True, "multigraph": False, "graph": {},
           "nodes": [{"id": 0, "name": "r"}, {"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
           "edges": [{"source": 0, "target": 1}, {"source": 1, "target": 2},
                     {"source": 2, "target": 1}]}
    path.write_text(json.dumps(doc))
    return path


def test_cycle_in_node_link_is_rejected(tmp_path):
    path = write_cycle_json(tmp_path / "cycle.json")
    with pytest.raises(UserError, match="cycle.json: .*several parents|cycle"):
        load_tree(path)


@pytest.mark.parametrize("text,message", [
    ("just: text\n", "not a dsspn concept tree"),
    ("tree:\n  name: r\n  children: 3\n", "field 'children' must be a list"),
    ("tree:\n  name: r\n  children:\n  - {name: a, labels: {x: [one]}}\n",
     "field 'labels' must map dataset names"),
    ("tree: [\n", "malformed YAML"),
])
def test_malformed_tree_files(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        load_tree(path)


def test_missing_tree_file(tmp_path):
    with pytest.raises(UserError, match="no such concept tree file"):
        load_tree(tmp_path / "none.yaml")
