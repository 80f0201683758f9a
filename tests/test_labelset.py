import csv
from collections import Counter

import pytest
from conftest import REFERENCE, write_yaml

from dsspn_cli.errors import UserError
from dsspn_cli.hierarchy.labelset import builtin_names, load_labelset, resolve_synsets

EXPECTED = {  # name: (labels, mapped, ignore value)
    "coco": (182, 171, 255),
    "ade": (150, 150, 0),
    "cityscapes": (35, 19, 255),
    "mapillary": (66, 65, 65),
    "mapillary-v2": (124, None, 123),
}


def reference_rows(name):
    lines = [l for l in (REFERENCE / name).read_text().splitlines() if not l.startswith("#")]
    return list(csv.DictReader(lines, delimiter="\t"))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtin_counts_and_ignore(name):
    labelset = load_labelset(name)
    total, mapped, ignore = EXPECTED[name]
    assert len(labelset.labels) == total
    if mapped is not None:
        assert len(labelset.mapped_labels) == mapped
    assert labelset.ignore_index == ignore


@pytest.mark.parametrize("alias,name", [("coco-stuff", "coco"), ("ADE20K", "ade"),
                                        ("vistas", "mapillary"), ("city", "cityscapes"),
                                        ("vistas-v2", "mapillary-v2")])
def test_aliases(alias, name):
    assert load_labelset(alias).name == name


@pytest.mark.skipif(not REFERENCE.exists(), reason="shared reference label sets not present")
def test_ids_and_names_equal_the_official_lists():
    coco = load_labelset("coco")
    rows = reference_rows("coco_stuff.tsv")
    assert [(l.id, l.name, l.used) for l in coco.labels] == [
        (int(r["id"]), r["name"], r["used"] == "yes") for r in rows]
    assert [l.extra["category_id"] for l in coco.labels] == [int(r["coco_category_id"])
                                                             for r in rows]
    ade = load_labelset("ade")
    assert [(l.id, ";".join([l.name, *l.extra.get("synonyms", [])])) for l in ade.labels] == [
        (int(r["idx"]), r["name"]) for r in reference_rows("ade20k_150.tsv")]
    city = load_labelset("cityscapes")
    rows = reference_rows("cityscapes.tsv")
    assert [(l.id, l.name, l.extra["train_id"], l.extra["category"]) for l in city.labels] == [
        (int(r["id"]), r["name"], int(r["trainId"]), r["category"]) for r in rows]
    for fname, key in (("mapillary_vistas_v1_2.tsv", "mapillary"),
                       ("mapillary_vistas_v2_0.tsv", "mapillary-v2")):
        vistas = load_labelset(key)
        assert [(l.id, l.name, l.extra["readable"]) for l in vistas.labels] == [
            (int(r["id"]), r["name"], r["readable"]) for r in reference_rows(fname)]


def test_cityscapes_train_ids_are_the_19_classes():
    city = load_labelset("cityscapes")
    train_ids = sorted(l.extra["train_id"] for l in city.mapped_labels)
    assert train_ids == list(range(19))
    assert all(l.ignore for l in city.labels if l.extra["train_id"] in (255, -1))


@pytest.mark.parametrize("name", builtin_names())
def test_every_mapped_label_has_a_reviewed_synset_or_a_parent(name, wn):
    labelset = load_labelset(name)
    synsets = []
    for label in labelset.mapped_labels:
        assert label.synset or label.parent, f"{name} {label.name} has neither"
        if label.synset:
            wn.synset(label.synset)          # exists in WordNet 3.0
            synsets.append(label.synset)
    for group in labelset.groups:
        if group.synset:
            wn.synset(group.synset)
            synsets.append(group.synset)
    assert [s for s, n in Counter(synsets).items() if n > 1] == []


def test_reviewed_senses_not_first_senses():
    coco = {l.name: l.synset for l in load_labelset("coco").labels}
    assert coco["cow"] == "cattle.n.01"            # the animal, not beef
    assert coco["mouse"] != "mouse.n.01"           # the device, not the rodent
    assert coco["person"] == "person.n.01"
    city = {l.name: l.synset for l in load_labelset("cityscapes").labels}
    assert city["car"] == coco["car"] == "car.n.01"


def test_user_yaml_labelset(tmp_path):
    path = write_yaml(tmp_path / "mine.yaml", {
        "name": "mine", "labels": [{"id": 0, "name": "car", "synset": "car.n.01"},
                                   {"id": 1, "name": "lane", "parent": "road.n.01"},
                                   {"id": 255, "name": "void", "ignore": True}]})
    labelset = load_labelset(str(path))
    assert labelset.name == "mine"
    assert [l.id for l in labelset.mapped_labels] == [0, 1]


def test_text_labelset_resolves_synsets_and_reports_ambiguity(tmp_path, wn):
    path = tmp_path / "classes.txt"
    path.write_text("# my classes\ncar\n\nzebra\nbank\n")
    labelset = load_labelset(str(path))
    assert [(l.id, l.name) for l in labelset.labels] == [(0, "car"), (1, "zebra"), (2, "bank")]
    resolved, notes = resolve_synsets(labelset, wn)
    assert resolved.label(1).synset == "zebra.n.01"
    assert any("'bank'" in note and "other senses" in note for note in notes)
    assert not any("'zebra'" in note for note in notes)


def test_text_label_wordnet_lacks_is_an_error(tmp_path, wn):
    path = tmp_path / "classes.txt"
    path.write_text("car\nflibbertygrok\n")
    with pytest.raises(UserError, match="'flibbertygrok' .*give it a 'synset:' or a 'parent:'"):
        resolve_synsets(load_labelset(str(path)), wn)


@pytest.mark.parametrize("doc,message", [
    ({"name": "x", "labels": [{"id": 0, "name": "a"}, {"id": 0, "name": "b"}]},
     "label id 0: used twice"),
    ({"name": "x", "labels": [{"id": 0, "name": "a"}, {"id": 1, "name": "a"}]},
     "label 'a': duplicate name"),
    ({"name": "x", "labels": [{"id": "zero", "name": "a"}]}, "field 'id' must be an integer"),
    ({"name": "x", "labels": [{"id": 0, "name": "a", "synset": "car"}]},
     "not a WordNet noun synset name"),
    ({"name": "x", "labels": [{"id": 0, "name": "a", "synset": "run.v.01"}]},
     "not a WordNet noun synset name"),
    ({"name": "x", "labels": [{"id": 0, "name": "a", "synset": "car.n.00"}]},
     "not a WordNet noun synset name"),
    ({"name": "x", "labels": [{"id": 0, "name": "a", "synonyms": "b"}]},
     "field 'synonyms' must be a list"),
    ({"name": "x", "ignore_index": 0, "labels": [{"id": 0, "name": "a"}]},
     "has the id of ignore_index"),
    ({"name": "x", "labels": [{"id": 70000, "name": "a"}]}, "must be between -1 and 65535"),
    ({"name": "x", "labels": {"a": 1}}, "field 'labels': must be a list"),
    ({"name": "x", "labels": [{"id": 0, "name": "a", "parent": "a"}]}, "cycle"),
    ({"name": "x", "labels": [{"id": 0, "name": "a", "parent": "b"},
                              {"id": 1, "name": "b", "parent": "a"}]}, "cycle (a -> b -> a)"),
    ({"name": "x", "labels": []}, "field 'labels': missing or empty"),
    ({"name": "x", "groups": [{"name": "g", "parent": "h"}, {"name": "h", "parent": "g"}],
      "labels": [{"id": 0, "name": "a", "parent": "g"}]}, "cycle"),
    (["not", "a", "mapping"], "must be a YAML mapping"),
])
def test_bad_labelsets_name_file_field_and_fix(tmp_path, doc, message):
    path = write_yaml(tmp_path / "bad.yaml", doc)
    with pytest.raises(UserError) as err:
        load_labelset(str(path))
    text = str(err.value)
    assert message in text and str(path) in text and "\n" not in text


def test_unknown_dataset_and_missing_file():
    with pytest.raises(UserError, match="unknown dataset 'nuscenes'; built-in label sets: ade, "):
        load_labelset("nuscenes")
    with pytest.raises(UserError, match="nope/x.yaml: no such label-set file"):
        load_labelset("nope/x.yaml")


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nlabels:\n  - {id: 0, name: [unclosed\n")
    with pytest.raises(UserError, match=r"broken.yaml: line \d+ malformed YAML"):
        load_labelset(str(path))


def test_folder_named_like_a_builtin_does_not_hide_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "coco").mkdir()                    # the user's COCO images, say
    assert load_labelset("coco").name == "coco"


def test_text_labelset_with_byte_order_mark(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_bytes("car\nroad\n".encode("utf-8-sig"))
    assert [l.name for l in load_labelset(str(path)).labels] == ["car", "road"]
