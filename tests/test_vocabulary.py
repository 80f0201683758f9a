"""One mapping of a vocabulary onto a tree (issue 21): each matching rule on the shipped tree
and the real WordNet, the problems in strict and reporting modes, the classes predict takes,
merge's placements and warnings, and 'dsspn hierarchy map'."""

import json
import subprocess
import sys

import networkx as nx
import pytest

from dsspn_cli.errors import UserError
from dsspn_cli.hierarchy.labelset import load_labelset
from dsspn_cli.hierarchy.tree import ConceptTree
from dsspn_cli.hierarchy.vocabulary import (
    dataset_labels,
    labelled,
    map_class,
    map_labelset,
    map_vocabulary,
)
from tests.conftest import REPO


def mapped(tree, wn, text):
    found = map_class(tree, wn, text)
    return found.how, set(found.concepts)


def small_tree(*edges):
    """A tree from (parent, child, synset) rows below a root 'entity' (entity.n.01)."""
    graph = nx.DiGraph()
    graph.add_node("entity", synset="entity.n.01", labels={})
    for parent, child, synset in edges:
        graph.add_node(child, synset=synset, labels={"d": [len(graph)]})
        graph.add_edge(parent, child)
    return ConceptTree(graph, {})


# ---------------------------------------------------------------------------------- same


@pytest.mark.parametrize("text,concept", [
    ("person", "person"), ("Person", "person"), ("wine_glass", "wine glass"),
    ("outdoor-things", "outdoor-things"), ("glass-other", "glass-other"),   # no synsets
    ("car.n.01", "car"), ("auto.n.01", "car"),                              # synsets
    ("automobile", "car"), ("edifice", "building-stuff"), ("aeroplane", "airplane"),
    ("vegetation", "plant-stuff"),                     # Cityscapes' label name
    ("construction--flat--road", "road"),              # Mapillary's
])
def test_same_concept_by_name_synset_lemma_or_label(tree, wn, text, concept):
    assert mapped(tree, wn, text) == ("same", {concept})


def test_every_lemma_names_its_synset_and_says_so(tree, wn):
    found = map_class(tree, wn, "automobile")
    assert found.synset == "car.n.01" and "'automobile' names car.n.01" in found.note
    assert tree.find("automobile") == "car" and tree.find("edifice") == "building-stuff"


# ---------------------------------------------------------------------------------- below


def test_below_takes_the_highest_concepts_wordnet_puts_under_the_class(tree, wn):
    assert mapped(tree, wn, "canine") == ("below", {"dog"})        # the animal sense
    assert map_class(tree, wn, "canine").synset == "canine.n.02"
    assert mapped(tree, wn, "motor vehicle") == ("below", {"car", "motorcycle", "truck"})
    assert mapped(tree, wn, "Motor_Vehicle")[1] == {"car", "motorcycle", "truck"}


def test_below_leaves_out_concepts_whose_ancestor_is_taken(tree, wn):
    how, concepts = mapped(tree, wn, "artifact")
    assert how == "below" and "truck" not in concepts and "van" not in concepts
    assert "vehicle-things" in concepts
    for concept in concepts:
        assert not concepts.intersection(tree.ancestors(concept)), concept


def test_groups_without_synsets_are_covered_through_their_children(tree, wn):
    """COCO's kitchen-things has no synset: WordNet reaches only its children. Every one
    of them is an artifact, so 'artifact' names the group; tableware takes some of them."""
    assert "kitchen-things" in map_class(tree, wn, "artifact").concepts
    assert mapped(tree, wn, "tableware") == ("below", {"plate", "cup", "fork", "spoon", "bowl"})


def test_below_follows_every_hypernym_path_and_instances(wn):
    # dog.n.01 is a canine and, on its other path, a domestic animal.
    tree = small_tree(("entity", "animal", "animal.n.01"), ("animal", "dog", "dog.n.01"),
                      ("animal", "cat", "cat.n.01"))
    assert mapped(tree, wn, "domestic animal") == ("below", {"dog"})
    # The Eiffel Tower is an instance of a tower, not a kind of one.
    tree = small_tree(("entity", "eiffel tower", "eiffel_tower.n.01"),
                      ("entity", "car", "car.n.01"))
    assert mapped(tree, wn, "tower") == ("below", {"eiffel tower"})


# ---------------------------------------------------------------------------------- coarser


def test_coarser_is_the_nearest_concept_above(tree, wn):
    found = map_class(tree, wn, "poodle")
    assert (found.how, set(found.concepts)) == ("coarser", {"dog"})
    assert "knows nothing finer" in found.note
    assert mapped(tree, wn, "Eiffel Tower") == ("coarser", {"tower"})     # an instance
    assert mapped(tree, wn, "street") == ("coarser", {"road"})
    assert mapped(tree, wn, "woman") == ("coarser", {"person"})


def test_coarser_over_several_paths_takes_the_deepest_or_asks(wn, tmp_path):
    """poodle -> dog, which WordNet puts under canine and under domestic animal."""
    deeper = small_tree(("entity", "animal", "animal.n.01"), ("animal", "pet",
                        "domestic_animal.n.01"), ("entity", "canine", "canine.n.02"),
                        ("entity", "car", "car.n.01"))
    assert mapped(deeper, wn, "poodle") == ("coarser", {"pet"})
    level = small_tree(("entity", "pet", "domestic_animal.n.01"),
                       ("entity", "canine", "canine.n.02"))
    found = map_class(level, wn, "poodle")
    assert found.how == "none" and set(found.choices) == {"pet", "canine"}
    with pytest.raises(UserError) as caught:
        map_vocabulary(level, ["poodle"], wn)
    message = str(caught.value)
    assert "poodle.n.01 is finer than the tree, a kind of pet and canine equally" in message
    assert "name the one you mean (--classes pet)" in message
    assert len(message.splitlines()) == 1
    # In a label set, the label's parent chooses.
    path = tmp_path / "pets.yaml"
    path.write_text("name: pets\nlabels:\n- {id: 0, name: poodle, synset: poodle.n.01}\n"
                    "- {id: 1, name: puppy, synset: poodle.n.01, parent: canine}\n")
    labels = map_labelset(level, load_labelset(path), wn, strict=False).classes
    assert labels[0].how == "none" and (labels[1].how, labels[1].concepts) == (
        "coarser", frozenset({"canine"}))


def test_the_root_is_never_coarser(tree, wn):
    assert map_class(tree, wn, "people").how == "none"    # a group: entity is all it has


# ---------------------------------------------------------------------------------- senses


def test_the_sense_that_reaches_the_tree_is_taken(tree, wn):
    found = map_class(tree, wn, "dog")                    # also frump, cad, frank...: coarser
    assert (found.how, set(found.concepts)) == ("same", {"dog"})
    assert mapped(tree, wn, "dogs") == ("same", {"dog"})
    # ground is land.n.04 (ground-stuff), earth.n.02 (earth) and land.n.02 (land): the
    # first holds the others.
    found = map_class(tree, wn, "ground")
    assert set(found.concepts) == {"ground-stuff"} and "earth.n.02" in found.note
    assert mapped(tree, wn, "window") == ("same", {"window-stuff"})
    # A synset the word itself names comes first: cloud.n.01 (below: fog) is a cloud too;
    # 'soil' is also a word of land.n.02, the concept land.
    assert mapped(tree, wn, "cloud") == ("same", {"clouds"})
    assert mapped(tree, wn, "soil") == ("same", {"dirt"})


def test_several_senses_reaching_the_tree_are_one_line_to_choose_from(tree, wn):
    found = map_class(tree, wn, "bike")
    assert found.how == "none" and set(found.choices) == {"motorcycle.n.01", "bicycle.n.01"}
    with pytest.raises(UserError) as caught:
        map_vocabulary(tree, ["bike"], wn)
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and message.startswith("--classes bike:")
    assert "motorcycle.n.01" in message and "bicycle.n.01" in message and "synset" in message
    assert map_class(tree, wn, "machine").choices == ("machine.n.01", "car.n.01")


# ---------------------------------------------------------------------------------- none


def test_a_class_naming_nothing_is_one_line_with_wordnet_neighbours(tree, wn):
    found = map_class(tree, wn, "people")
    assert found.how == "none" and not found.concepts
    assert found.suggestions[0] == "person"             # people's members
    with pytest.raises(UserError) as caught:
        map_vocabulary(tree, ["sky", "people"], wn)
    message = str(caught.value)
    assert len(message.splitlines()) == 1
    assert "--classes people: no concept 'people'" in message
    assert "did you mean 'person'" in message
    typo = map_class(tree, wn, "persn")
    assert typo.how == "none" and typo.suggestions[0] == "person"


def test_several_problems_say_how_many_more(tree, wn):
    with pytest.raises(UserError, match=r"\(2 more problems: 'dsspn hierarchy map'"):
        map_vocabulary(tree, ["people", "bike", "xyzzy"], wn)


# ---------------------------------------------------------------------------------- shared


def test_two_classes_on_one_concept_are_one_line_or_reported(tree, wn):
    with pytest.raises(UserError) as caught:
        map_vocabulary(tree, ["poodle", "sky", "dog"], wn)
    message = str(caught.value)
    assert len(message.splitlines()) == 1
    assert message.startswith("--classes poodle,dog: both name dog")
    assert "cannot tell them apart" in message and "keep one of them" in message
    vocabulary = map_vocabulary(tree, ["poodle", "sky", "dog"], wn, strict=False)
    [problem] = vocabulary.problems
    assert (problem.kind, problem.classes, problem.concepts) == ("shared", ("poodle", "dog"),
                                                                 ("dog",))
    assert vocabulary.names == ("poodle", "sky", "dog")
    with pytest.raises(UserError, match="'car' is named twice"):
        map_vocabulary(tree, ["car", "car"], wn)


def test_a_class_naming_a_concept_takes_it_from_a_union(tree, wn):
    vocabulary = map_vocabulary(tree, ["motor vehicle", "car"], wn)
    assert vocabulary.concept_sets == (frozenset({"motorcycle", "truck"}), frozenset({"car"}))
    assert "car goes to 'car'" in vocabulary.classes[0].note
    ids = vocabulary.concept_ids(tree)
    assert ids[1] == frozenset({tree.id("car")})
    # A finer union takes its concepts from a coarser one.
    vocabulary = map_vocabulary(tree, ["self-propelled vehicle", "motor vehicle"], wn)
    assert vocabulary.concept_sets[1] == frozenset({"car", "motorcycle", "truck"})
    assert not vocabulary.concept_sets[0] & vocabulary.concept_sets[1]
    # Nothing left to a union: a problem.
    vocabulary = map_vocabulary(tree, ["motor vehicle", "car", "truck", "motorcycle"], wn,
                                strict=False)
    [problem] = vocabulary.problems
    assert problem.classes == ("motor vehicle",) and "nothing is left to it" in problem.message


# ---------------------------------------------------------------------------------- label sets


def test_label_set_classes_use_their_synset_else_their_name(tree, wn, tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nignore_index: 255\nlabels:\n"
                    "- {id: 0, name: plant, synset: pot_plant.n.01}\n"   # not plant-stuff
                    "- {id: 1, name: vegetation}\n"
                    "- {id: 2, name: lane paint, parent: road.n.01}\n"
                    "- {id: 3, name: xyzzy, parent: road.n.01}\n"
                    "- {id: 4, name: heavens, synset: celestial_sphere.n.01}\n"
                    "- {id: 5, name: void, ignore: true}\n")
    labelset = load_labelset(path)
    vocabulary = map_labelset(tree, labelset, wn, strict=False)
    rows = {m.label_id: (m.how, set(m.concepts)) for m in vocabulary.classes}
    assert rows[0] == ("same", {"potted plant"}) and rows[1] == ("same", {"plant-stuff"})
    assert rows[2] == ("coarser", {"road"}) and rows[3] == ("coarser", {"road"})
    assert rows[4] == ("none", set()) and 5 not in rows
    kinds = sorted((p.kind, p.classes) for p in vocabulary.problems)
    assert kinds == [("shared", ("lane paint", "xyzzy")), ("unnamed", ("heavens",))]
    with pytest.raises(UserError) as caught:
        map_labelset(tree, labelset, wn)
    message = str(caught.value)
    assert message.startswith(f"{path}: label 'heavens' (id 4): no concept 'heavens'")
    assert "'synset:'" in message and len(message.splitlines()) == 1


def test_a_built_in_label_set_maps_onto_its_own_tree(tree, wn):
    vocabulary = map_labelset(tree, load_labelset("cityscapes"), wn, strict=False)
    assert not vocabulary.problems and {m.how for m in vocabulary.classes} == {"same"}
    assert len(vocabulary.classes) == 19


# ---------------------------------------------------------------------------------- users


def test_predict_classes_are_named_through_the_mapping(tree, wn):
    from dsspn_cli.engine.predict import choose_classes

    choice = choose_classes(tree, "automobile, canine,sky", wn=wn)
    assert choice.concept_sets == tuple(frozenset({tree.id(c)})
                                        for c in ("car", "dog", "sky-other"))
    assert choice.sets == choice.concept_sets
    assert [m.how for m in choice.mappings] == ["same", "below", "same"]
    union = choose_classes(tree, "motor vehicle,sky", wn=wn)
    assert union.concept_sets == (frozenset(tree.id(c) for c in ("car", "motorcycle", "truck")),
                                  frozenset({tree.id("sky-other")}))
    with pytest.raises(UserError, match="'motor vehicle' names 3 concepts"):
        tree.find("motor vehicle")


def test_predict_and_map_read_classes_and_label_sets_alike(tree, wn, tmp_path):
    from dsspn_cli.hierarchy.vocabulary import vocabulary_for

    chosen = vocabulary_for(tree, " automobile, ,sky ", wn=wn)
    assert (chosen.vocabulary.names, chosen.labelset, chosen.other, chosen.source) == (
        ("automobile", "sky"), None, None, "--classes")
    for strict in (True, False):
        with pytest.raises(UserError, match=r"^--classes ' , ': name one class or more, "
                                            "like person,sky$"):
            vocabulary_for(tree, " , ", wn=wn, strict=strict)
    voc = vocabulary_for(tree, labelset="voc", wn=wn, strict=False)
    assert voc.other.name == "background" and voc.source == voc.labelset.source
    assert "background" not in voc.vocabulary.names
    assert len(voc.vocabulary.classes) == len(voc.labelset.mapped_labels) - 1
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nlabels:\n- {id: 0, name: car, synset: car.n.01}\n"
                    "- {id: 1, name: zzqx}\n")
    with pytest.raises(UserError, match="label 'zzqx' \\(id 1\\)"):
        vocabulary_for(tree, labelset=path, wn=wn)
    assert [m.how for m in vocabulary_for(tree, labelset=path, wn=wn, strict=False)
            .vocabulary.classes] == ["same", "none"]


def test_label_display_names_are_readable_names_by_label_id(tree):
    from dsspn_cli.hierarchy.vocabulary import dataset_labelset, label_display_names

    names = label_display_names(tree, "mapillary")
    road = next(label for label in load_labelset("mapillary").labels
                if label.name == "construction--flat--road")
    assert names[road.id] == "Road"
    assert label_display_names(tree, "cityscapes")[21] == "vegetation"
    lost = ConceptTree(tree.graph, {"x": {"labelset": "no-such-file.yaml"}})
    assert dataset_labelset(lost, "x") is None and label_display_names(lost, "x") == {}


def test_dataset_labels_stand_beside_their_concepts(tree, run):
    labels = dataset_labels(tree, "cityscapes")
    assert labels["plant-stuff"] == ["vegetation"] and labels["pedestrian"] == ["person"]
    assert labelled("plant-stuff", ["vegetation"]) == "vegetation (plant-stuff)"
    assert labelled("road", ["Road"]) == "road"
    result = run("hierarchy", "show", "--dataset", "cityscapes")
    assert result.exit_code == 0, result.stderr
    assert "vegetation (plant-stuff)" in result.stdout
    assert "person (pedestrian)" in result.stdout


# ---------------------------------------------------------------------------------- merge


def test_merge_warns_where_a_label_lands_at_the_top_or_splits_another(tree, wn, tmp_path):
    from dsspn_cli.hierarchy.merge import merge_labelsets

    path = tmp_path / "mine.txt"
    path.write_text("road\nheavens\ngreenery\n")
    _, report = merge_labelsets([load_labelset(path)], wn, onto=tree)
    placed = {p.label: p for p in report.placements}
    assert placed["road"].how == "joined" and placed["road"].parent == "ground-stuff"
    assert placed["heavens"].synset == "celestial_sphere.n.01"
    assert placed["heavens"].parent == tree.root and placed["heavens"].by_name
    assert placed["greenery"].parent == "leaves" and placed["greenery"].how == "WordNet"
    top, split = report.warnings
    assert "'heavens' (id 1) went to the top of the tree, beside things, stuff" in top
    assert "below coco's 'leaves'" in split and "(such as 'plant-stuff')" in split
    for warning in (top, split):
        assert "'synset:'" in warning and "'parent:'" in warning
        assert "in a YAML label set" in warning and len(warning.splitlines()) == 1
    # A synset given (not guessed from the name) under another's label is the user's own.
    given = tmp_path / "given.yaml"
    given.write_text("name: given\nlabels:\n- {id: 0, name: greenery, synset: greenery.n.01}\n")
    assert not merge_labelsets([load_labelset(given)], wn, onto=tree)[1].warnings


def test_merge_lists_placements_of_files_but_not_of_built_ins(run, tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("heavens\ncar\n")
    result = run("hierarchy", "merge", "coco", path, "-o", tmp_path / "t.yaml")
    assert result.exit_code == 0, result.stderr
    assert "where the labels of mine went" in result.stdout
    assert "celestial_sphere.n.01 (by name)" in result.stdout
    assert "warning mine 'heavens' (id 0) went to the top of the tree" in result.stdout
    result = run("hierarchy", "merge", "coco", "cityscapes", "-o", tmp_path / "b.yaml")
    assert result.exit_code == 0, result.stderr
    assert "where the labels" not in result.stdout and "warning" not in result.stdout
    verbose = run("hierarchy", "merge", "cityscapes", "-v", "-o", tmp_path / "c.yaml")
    assert "where the labels of cityscapes went" in verbose.stdout


# ---------------------------------------------------------------------------------- map


def test_hierarchy_map_table(run):
    result = run("hierarchy", "map", "--classes", "canine,motor vehicle,poodle,people,car")
    assert result.exit_code == 0, result.stderr
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines()
            if line.startswith("│")}
    assert "below" in rows["canine"] and "dog (143)" in rows["canine"]
    assert "car (99)" not in rows["motor vehicle"] and "truck (110)" in rows["motor vehicle"]
    assert "coarser" in rows["poodle"] and "none" in rows["people"]
    assert "5 classes: 1 same, 2 below, 1 coarser, 1 none" in result.stdout
    assert "problem --classes canine,poodle: both name dog" in result.stdout
    assert "problem --classes people: no concept 'people'" in result.stdout


def test_hierarchy_map_json_of_a_label_set(run, tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("automobile\nbike\n")
    result = run("hierarchy", "map", path, "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    car, bike = doc["classes"]
    assert (car["id"], car["how"], car["synset"]) == (0, "same", "car.n.01")
    assert car["concepts"] == [{"name": "car", "id": 99}]
    assert bike["how"] == "none" and set(bike["choices"]) == {"motorcycle.n.01",
                                                              "bicycle.n.01"}
    assert [p["kind"] for p in doc["problems"]] == ["unnamed"]
    assert run("hierarchy", "map").exit_code == 2
    assert run("hierarchy", "map", "coco", "--classes", "car").exit_code == 2


def test_hierarchy_map_reads_a_checkpoints_tree(run, tree, tmp_path):
    import torch

    from dsspn_cli.engine.checkpoint import FORMAT, VERSION

    small = small_tree(("entity", "dog", "dog.n.01"), ("entity", "car", "car.n.01"))
    path = tmp_path / "model.pt"
    torch.save({"format": FORMAT, "version": VERSION, "model": {}, "tree":
                small.to_node_link(), "config": {}, "step": 0, "epoch": 0}, path)
    result = run("hierarchy", "map", "--classes", "poodle", "--model", path, "--json")
    assert result.exit_code == 0, result.stderr
    [poodle] = json.loads(result.stdout)["classes"]
    assert poodle["how"] == "coarser" and poodle["concepts"] == [{"name": "dog", "id": 1}]


def test_hierarchy_map_of_a_tree_imports_neither_torch_nor_pydantic():
    code = ("import sys\nfrom dsspn_cli.cli.main import main\n"
            "try:\n    main(['hierarchy', 'map', '--classes', 'canine,poodle', '--tree', "
            f"{str(REPO / 'hierarchies' / 'dsspn-four-datasets.yaml')!r}])\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "print('heavy:', [m for m in ('torch', 'pydantic') if m in sys.modules])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("heavy: []"), proc.stdout


def test_without_wordnet_the_trees_own_names_still_name_classes(monkeypatch):
    from dsspn_cli.hierarchy import wordnet as wordnet_module
    from dsspn_cli.hierarchy.tree import load_tree

    def missing(*args, **kwargs):
        raise UserError(wordnet_module.HOW_TO_GET)

    monkeypatch.setattr(wordnet_module, "wordnet", missing)
    tree = load_tree()                          # a tree of its own: nothing cached
    assert mapped(tree, None, "person") == ("same", {"person"})
    assert mapped(tree, None, "car.n.01") == ("same", {"car"})
    assert mapped(tree, None, "vegetation") == ("same", {"plant-stuff"})
    assert mapped(tree, None, "vehicle") == ("same", {"vehicle-things"})   # vehicle.n.01
    found = map_class(tree, None, "canine")
    assert found.how == "none" and "WordNet 3.0 not found" in found.note
