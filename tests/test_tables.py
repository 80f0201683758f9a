import json

import pytest
from test_tree import small_tree

from dsspn_cli.errors import UserError
from dsspn_cli.hierarchy.tables import IGNORE, MaskingTable


def test_neurons_paths_and_lookup_arrays():
    tree = small_tree()   # entity > animal > cat, dog; entity > vehicle > car, bus
    table = MaskingTable.from_tree(tree)
    assert [table.concepts[c] for c in table.neuron_concept] == ["entity", "animal", "vehicle"]
    assert table.neuron_children[2] == [tree.id("car"), tree.id("bus")]
    assert table.concept_path[tree.id("bus")] == [(0, 1), (2, 1)]
    assert table.concept_path[tree.id("entity")] == []
    assert table.path_neuron[tree.id("cat")] == [0, 1]
    assert table.path_child[tree.id("animal")] == [0, IGNORE]
    assert table.concept_neuron[tree.id("cat")] == IGNORE
    a = table.dataset("a")
    assert len(a.label_to_concept) == 256
    assert a.concept(3) == tree.id("car") and a.concept(9) == tree.id("animal")
    assert a.concept(255) == IGNORE and a.concept(4) == IGNORE and a.concept(999) == IGNORE


def test_concept_masking_follows_what_each_dataset_defines():
    tree = small_tree()
    table = MaskingTable.from_tree(tree)
    b = table.dataset("b")            # b labels only car and bus
    assert b.child_mask[0] == [False, True]    # entity: animal masked, vehicle defined
    assert b.child_mask[1] == [False, False]   # animal neuron: nothing defined
    assert b.child_mask[2] == [True, True]
    a = table.dataset("a")            # a labels animal and, below it, cat and dog
    assert a.child_mask[2] == [True, False]    # vehicle: car yes, bus no
    assert a.exclusive == [tree.id("animal")]


def test_save_load_round_trip(tmp_path):
    table = MaskingTable.from_tree(small_tree())
    written = table.save(tmp_path / "tables")
    assert [p.name for p in written] == ["tables.json", "summary.txt"]
    again = MaskingTable.load(tmp_path / "tables")
    assert again.to_dict() == table.to_dict()
    assert "3 semantic neurons" in (tmp_path / "tables" / "summary.txt").read_text()


def test_damaged_tables_are_a_clear_error(tmp_path):
    (tmp_path / "tables.json").write_text(json.dumps({"format": "dsspn-masking-tables"}))
    with pytest.raises(UserError, match="damaged masking tables"):
        MaskingTable.load(tmp_path)
    with pytest.raises(UserError, match="dataset 'zzz' is not in this tree"):
        MaskingTable.from_tree(small_tree()).dataset("zzz")
