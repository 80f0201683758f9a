import pytest
from conftest import write_yaml

from dsspn_cli.errors import UserError
from dsspn_cli.hierarchy.check import check_graph
from dsspn_cli.hierarchy.labelset import load_labelset
from dsspn_cli.hierarchy.merge import merge_labelsets


def merged(wn, *paths, max_depth=5):
    return merge_labelsets([load_labelset(str(p)) for p in paths], wn, max_depth=max_depth)


def test_skeleton_is_kept_and_unused_labels_left_out(wn, base_set):
    tree, report = merged(wn, base_set)
    assert tree.root == "entity"
    assert tree.ancestors("cat")[-1] in ("animal-things", "mammal")
    assert "mystery" not in tree
    assert report.datasets[0].labels == 7


def test_finer_label_goes_under_coarser_concept(wn, base_set, fine_set):
    tree, _ = merged(wn, base_set, fine_set)
    assert tree.parent("armchair") == "chair"
    assert tree.parent("swivel chair") == "chair"


def test_same_synset_from_two_datasets_is_one_concept(wn, base_set, fine_set):
    tree, report = merged(wn, base_set, fine_set)
    assert tree.labels("cat") == {"base": [0], "fine": [5]}
    assert report.datasets[1].joined >= 1


def test_coarse_label_becomes_the_group_with_its_synset(wn, base_set, fine_set):
    tree, _ = merged(wn, base_set, fine_set)
    assert tree.labels("animal-things") == {"fine": [3]}


def test_coarse_label_adopts_finer_concepts_of_another_dataset(wn, base_set, fine_set):
    tree, _ = merged(wn, base_set, fine_set)
    assert tree.parent("pillow") == "cushion"
    assert tree.parent("cushion") == "textile-stuff"
    assert tree.parent("towel") == "textile-stuff"


def test_order_of_coarse_and_fine_does_not_change_the_parenthood(wn, tmp_path, base_set):
    coarse_first = write_yaml(tmp_path / "a.yaml", {"name": "a", "labels": [
        {"id": 0, "name": "seat", "synset": "seat.n.03"}]})
    fine = write_yaml(tmp_path / "b.yaml", {"name": "b", "labels": [
        {"id": 0, "name": "armchair", "synset": "armchair.n.01"}]})
    one, _ = merged(wn, base_set, coarse_first, fine)
    two, _ = merged(wn, base_set, fine, coarse_first)
    for tree in (one, two):
        assert tree.parent("chair") == "seat"
        assert tree.parent("armchair") == "chair"


def test_wordnet_intermediate_groups_two_or_more_but_not_all(wn, base_set):
    tree, report = merged(wn, base_set)
    # cat and dog are mammals, bird is not: 'mammal' groups two of the three.
    assert tree.parent("cat") == tree.parent("dog") == "mammal"
    assert tree.parent("bird") == "animal-things"
    assert tree.node("mammal")["kind"] == "wordnet"
    assert "mammal" in report.intermediates
    # chair and bed are both furniture but share no finer WordNet group: nothing added.
    assert tree.parent("chair") == tree.parent("bed") == "furniture-things"


def test_depth_limit_holds_and_no_single_child_chains(wn, base_set, fine_set):
    for depth in (3, 4, 5):
        tree, _ = merged(wn, base_set, fine_set, max_depth=depth)
        assert tree.height <= depth
        violations = check_graph(tree.graph, {}, depth)
        assert [v for v in violations if v.rule != "label mapping"] == []


def test_label_less_single_child_group_is_spliced(wn, tmp_path):
    path = write_yaml(tmp_path / "s.yaml", {"name": "s", "groups": [
        {"name": "people"}, {"name": "things"}], "labels": [
        {"id": 0, "name": "person", "parent": "people", "synset": "person.n.01"},
        {"id": 1, "name": "car", "parent": "things", "synset": "car.n.01"},
        {"id": 2, "name": "bus", "parent": "things", "synset": "bus.n.01"}]})
    tree, report = merged(wn, path)
    assert "people" not in tree and tree.parent("person") == "entity"
    assert report.spliced == ["people"]


def test_explicit_parent_by_synset(wn, base_set, tmp_path):
    path = write_yaml(tmp_path / "p.yaml", {"name": "p", "labels": [
        {"id": 0, "name": "pet bed", "parent": "bed.n.01"},
        {"id": 1, "name": "four-poster", "synset": "four-poster.n.01"}]})
    tree, report = merged(wn, base_set, path)
    assert tree.parent("pet bed") == "bed" and tree.parent("four-poster") == "bed"
    assert report.datasets[1].explicit == 1


def test_output_is_byte_identical_for_same_inputs(wn, base_set, fine_set, tmp_path):
    a, _ = merged(wn, base_set, fine_set)
    b, _ = merged(wn, base_set, fine_set)
    a.save(tmp_path / "a.yaml")
    b.save(tmp_path / "b.yaml")
    assert (tmp_path / "a.yaml").read_bytes() == (tmp_path / "b.yaml").read_bytes()


def test_unknown_synset_in_labelset_is_a_clear_error(wn, tmp_path):
    path = write_yaml(tmp_path / "u.yaml", {"name": "u", "labels": [
        {"id": 0, "name": "car", "synset": "carr.n.01"}]})
    with pytest.raises(UserError, match=r"u.yaml: label 'car' \(id 0\): unknown WordNet 3.0 noun "
                                        r"synset 'carr.n.01'"):
        merged(wn, path)


def test_same_dataset_twice_is_an_error(wn, base_set):
    with pytest.raises(UserError, match="dataset 'base' is given twice"):
        merged(wn, base_set, base_set)


def test_parent_by_concept_name_of_an_earlier_dataset(wn, base_set, tmp_path):
    path = write_yaml(tmp_path / "n.yaml", {"name": "n", "labels": [
        {"id": 0, "name": "quilt", "parent": "textile-stuff", "synset": "quilt.n.01"}]})
    tree, _ = merged(wn, base_set, path)
    assert tree.parent("quilt") == "textile-stuff"
    typo = write_yaml(tmp_path / "t.yaml", {"name": "t", "labels": [
        {"id": 1, "name": "gadget", "parent": "nowhere"}]})
    with pytest.raises(UserError, match="label 'gadget' .*unknown parent 'nowhere'"):
        merged(wn, base_set, typo)


def test_parent_naming_a_concept_of_an_unmerged_builtin_falls_back(wn, tmp_path):
    # 'outdoor-things' is COCO's: merging without COCO, WordNet places the label instead.
    path = write_yaml(tmp_path / "m.yaml", {"name": "m", "labels": [
        {"id": 0, "name": "kiosk", "synset": "kiosk.n.01", "parent": "outdoor-things"},
        {"id": 1, "name": "car", "synset": "car.n.01"}]})
    tree, report = merged(wn, path)
    assert "kiosk" in tree
    assert any("parent 'outdoor-things' is not in this tree" in n for n in report.notes)


def test_synonymous_synset_names_are_one_concept(wn, base_set, tmp_path):
    path = write_yaml(tmp_path / "a.yaml", {"name": "a", "labels": [
        {"id": 0, "name": "pussycat", "synset": "true_cat.n.01"}]})      # = cat.n.01
    tree, _ = merged(wn, base_set, path)
    assert tree.labels("cat") == {"base": [0], "a": [0]}


def test_label_parent_chains_are_followed(wn, base_set, tmp_path):
    path = write_yaml(tmp_path / "c.yaml", {"name": "c", "labels": [
        {"id": 0, "name": "c", "parent": "b"}, {"id": 1, "name": "b", "parent": "a"},
        {"id": 2, "name": "a", "synset": "seat.n.03"}, {"id": 3, "name": "d", "parent": "b"}]})
    tree, _ = merged(wn, base_set, path)
    assert tree.parent("c") == "b" and tree.parent("b") == "a"


def test_labelled_concept_left_with_one_child_gets_an_other_sibling(wn, base_set, tmp_path):
    path = write_yaml(tmp_path / "o.yaml", {"name": "o", "labels": [
        {"id": 0, "name": "armchair", "synset": "armchair.n.01"}]})
    tree, report = merged(wn, base_set, path)
    assert tree.children("chair") == ["armchair", "chair-other"]
    assert tree.node("chair-other")["kind"] == "other"
    assert report.others == ["chair-other"]


def test_merging_onto_a_tree_moves_none_of_its_concepts(wn, base_set, fine_set, tmp_path):
    """--onto: the fine set alone would adopt base's chair under a new 'armchair'-level
    group or regroup its animals; onto a trained tree every old concept keeps its ancestors,
    new labels go below or beside them, and old neurons keep their children (or gain)."""
    from dsspn_cli.hierarchy.tables import MaskingTable

    old, _ = merged(wn, base_set)
    old.save(tmp_path / "old.yaml")
    from dsspn_cli.hierarchy.tree import load_tree

    old = load_tree(tmp_path / "old.yaml")
    extra = write_yaml(tmp_path / "extra.yaml", {"name": "extra", "ignore_index": 255,
                                                  "labels": [
        {"id": 0, "name": "kitty", "synset": "cat.n.01"},
        {"id": 1, "name": "armchair", "synset": "armchair.n.01"},
        {"id": 2, "name": "furniture", "synset": "furniture.n.01"},
        {"id": 3, "name": "seat", "synset": "seat.n.03"},
        {"id": 4, "name": "horse", "synset": "horse.n.01"},
        {"id": 5, "name": "cow", "synset": "cow.n.01"}]})
    new, report = merge_labelsets([load_labelset(str(extra))], wn, onto=old,
                                  output_dir=tmp_path)
    for name in old.names:
        assert name in new and new.ancestors(name) == old.ancestors(name), name
        assert set(old.children(name)) <= set(new.children(name)), name
    assert new.labels("cat") == {"base": [0], "extra": [0]}        # joined, not duplicated
    assert new.parent("armchair") == "chair"
    assert new.labels("furniture-things") == {"extra": [2]}
    assert set(new.datasets) == {"base", "extra"}
    assert not check_graph(new.graph, new.datasets, new.max_depth, tree_path=tmp_path / "t")
    # Every old neuron survives: the same concept, the same ancestors, its children or more.
    from dsspn_cli.model.grow import neuron_signature

    before, after = MaskingTable.from_tree(old), MaskingTable.from_tree(new)
    kept = {neuron_signature(before, k)[:2]: neuron_signature(before, k)[2]
            for k in range(len(before.neuron_concept))}
    grown = {neuron_signature(after, k)[:2]: neuron_signature(after, k)[2]
             for k in range(len(after.neuron_concept))}
    for key, children in kept.items():
        assert key in grown and set(children) <= set(grown[key]), key


def test_merging_onto_refuses_a_dataset_the_tree_has(wn, base_set, tmp_path):
    old, _ = merged(wn, base_set)
    with pytest.raises(UserError, match="already in"):
        merge_labelsets([load_labelset(str(base_set))], wn, onto=old)


def test_merge_onto_from_the_command_line(run, tmp_path, fine_set):
    out = tmp_path / "grown.yaml"
    result = run("hierarchy", "merge", "--onto", "", fine_set, "-o", out)
    assert result.exit_code == 2
    from dsspn_cli.resources import default_tree_path

    result = run("hierarchy", "merge", "--onto", default_tree_path(), fine_set, "-o", out)
    assert result.exit_code == 0, result.stderr
    result = run("hierarchy", "check", out)
    assert result.exit_code == 0, result.stdout
    assert "--onto" in out.read_text().splitlines()[0]


def test_a_merged_tree_records_the_command_that_makes_it_again(run, tmp_path, fine_set,
                                                              monkeypatch):
    """The header names what was given (a file as its path, quoted where the shell needs
    it), not the label set's own name, which no command accepts; running it again gives the
    same tree."""
    import shlex

    from dsspn_cli.resources import default_tree_path

    spaced = tmp_path / "my streets.yaml"
    spaced.write_text(fine_set.read_text())
    out = tmp_path / "grown.yaml"
    assert run("hierarchy", "merge", "--onto", default_tree_path(), spaced, "-o", out
               ).exit_code == 0
    first = out.read_text().splitlines()[0]
    command = first.split("merged with: ", 1)[1]
    argv = shlex.split(command)
    assert argv[:3] == ["dsspn", "hierarchy", "merge"]
    assert str(spaced) in argv and "fine" not in argv
    again = tmp_path / "again.yaml"
    assert run(*argv[1:], "-o", again).exit_code == 0
    assert again.read_text() == out.read_text()
