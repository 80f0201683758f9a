"""predict in any vocabulary (issue 21): a class that is a union of concepts gets the pixels
of any of them and runs only the neurons on their paths (DSSPN); the flat baseline sums its
probabilities into each class (MSeg's way); with --dataset, the dataset's own label names
the outputs, the concept beside it."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from dsspn_cli.engine.checkpoint import load_model, save_checkpoint
from dsspn_cli.engine.config import TrainConfig
from dsspn_cli.engine.infer import Inference
from dsspn_cli.engine.predict import Predictor, choose_classes, legend_text
from dsspn_cli.hierarchy.tables import MaskingTable
from dsspn_cli.hierarchy.tree import load_tree
from dsspn_cli.model.contract import Query
from dsspn_cli.model.segmenter import build_model

UNION = ("car", "motorcycle", "truck")       # what 'motor vehicle' names in the shipped tree


def _checkpoint(folder, head: dict) -> object:
    torch.manual_seed(0)
    tree = load_tree()
    config = TrainConfig(backbone="resnet18", output_stride=16, head=head)
    model = build_model(MaskingTable.from_tree(tree), config)
    path = folder / "model.pt"
    save_checkpoint(path, model=model.eval(), tree=tree, step=0, epoch=0,
                    config=config.to_dict())
    return path


@pytest.fixture(scope="module")
def dsspn_checkpoint(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("dsspn"), {"hidden": 8})


@pytest.fixture(scope="module")
def flat_checkpoint(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("flat"), {"type": "flat"})


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "a.png"
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 255, (48, 80, 3), dtype=np.uint8)).save(path)
    return path


def _sets(tree, *classes) -> tuple[frozenset[int], ...]:
    return tuple(frozenset(tree.id(c) for c in cls) for cls in classes)


def _steer(model, tree, target: str) -> None:
    """Make every pixel descend to ``target``: each neuron's child on the path to it scores
    high, every other child low, whatever the features."""
    head = model.head
    table = head.masking.table
    for neuron in head.neurons:
        neuron.predict.weight.data.zero_()
        neuron.predict.bias.data.fill_(-30.0)
        if neuron.direct is not None:
            neuron.direct.weight.data.zero_()
    path = tree.ancestors(target) + [target]
    for parent, child in zip(path, path[1:]):
        k = table.concept_neuron[tree.id(parent)]
        head.neurons[k].predict.bias.data[table.neuron_children[k].index(tree.id(child))] = 30.0


# ------------------------------------------------------------------------------ DSSPN


@pytest.mark.parametrize("target,expected", [("car", 0), ("motorcycle", 0), ("truck", 0),
                                             ("sky-other", 1), ("bus", -1)])
def test_a_union_class_gets_the_pixels_of_any_of_its_concepts(dsspn_checkpoint, target,
                                                              expected):
    model, _, tree, _ = load_model(dsspn_checkpoint)
    _steer(model, tree, target)
    classes = _sets(tree, UNION, ["sky-other"])
    image = torch.randn(1, 3, 48, 80)
    whole, _ = model.predict(image)
    assert (whole == tree.id(target)).all()               # the steering holds
    for static in (False, True):
        values, confidence = model.predict(image, Query(classes=classes, static=static))
        assert (values == expected).all()                 # bus is no motor vehicle: other
        assert (confidence > 0.99).all()


def test_a_union_runs_only_the_neurons_on_its_concepts_paths(dsspn_checkpoint):
    model, _, tree, _ = load_model(dsspn_checkpoint)
    masking, head = model.masking, model.head
    classes = _sets(tree, UNION, ["sky-other"])
    on_paths = {masking.table.concept_neuron[tree.id(a)]
                for concepts in (UNION, ["sky-other"]) for c in concepts
                for a in tree.ancestors(c)}
    plan = {step.neuron for step in masking.descent(None, None, False, classes)}
    assert plan == on_paths
    # motorcycle and truck have neurons of their own (Mapillary's finer labels): not run.
    assert not {masking.table.concept_neuron[tree.id(c)] for c in ("motorcycle", "truck")} \
        & plan
    ran = []
    original = head._logits

    def recording(neurons, hidden, logits):
        ran.extend(neurons)
        return original(neurons, hidden, logits)

    head._logits = recording
    image = torch.randn(2, 3, 48, 80)
    values, _ = model.predict(image, Query(classes=classes, static=True))
    assert set(ran) == plan
    ran.clear()
    eager, _ = model.predict(image, Query(classes=classes))
    assert set(ran) <= plan and torch.equal(values, eager)
    # The same pixels as the whole prediction read in the classes.
    whole, _ = model.predict(image)
    assert torch.equal(values, masking.vocabulary(classes)[whole])


# ------------------------------------------------------------------------------ flat


def _flat_answer(model, tree, probabilities: dict, classes):
    """The flat head's answer for pixels whose class probabilities are given (concept name
    -> probability per pixel; every other class 0)."""
    head = model.head
    columns = len(next(iter(probabilities.values())))
    logits = torch.full((1, len(head.class_concept), 1, columns), -1e4)
    position = {int(c): i for i, c in enumerate(head.class_concept)}
    for name, values in probabilities.items():
        for x, p in enumerate(values):
            if p > 0:
                logits[0, position[tree.id(name)], 0, x] = math.log(p)
    head.logits = lambda features, dataset: logits
    concepts, confidence = head.predict(torch.zeros(1), Query(classes=classes))
    del head.logits
    values = model.masking.vocabulary(classes)[concepts] if classes is not None else concepts
    return concepts[0, 0].tolist(), values[0, 0].tolist(), confidence[0, 0].tolist()


def test_the_flat_head_sums_probabilities_into_each_class(flat_checkpoint):
    model, _, tree, _ = load_model(flat_checkpoint)
    # Pixel 0: car .30, truck .25, person .45; pixel 1: bus .40, car .35, person .25.
    given = {"car": [0.30, 0.35], "truck": [0.25, 0], "person": [0.45, 0.25],
             "bus": [0, 0.40]}
    motor, person, car = _sets(tree, UNION, ["person"], ["car"])
    # The argmax alone would say person, then bus; summed, motor vehicle takes pixel 0
    # (.30 + .25 = .55 > .45), and bus is no motor vehicle: pixel 1 is other (.40 > .35).
    concepts, values, confidence = _flat_answer(model, tree, given, (motor, person))
    assert values == [0, -1] and confidence == pytest.approx([0.55, 0.40], abs=1e-5)
    assert concepts[0] == tree.id("car")              # the likeliest concept of the winner
    # One class: everything else is other (.55 against person's .45).
    _, values, confidence = _flat_answer(model, tree, given, (person,))
    assert values == [-1, -1] and confidence == pytest.approx([0.55, 0.75], abs=1e-5)
    # Other sums what no class holds: bus's .40 beats car's .35 on pixel 1.
    _, values, confidence = _flat_answer(model, tree, given, (car, person))
    assert values == [1, -1] and confidence == pytest.approx([0.45, 0.40], abs=1e-5)
    # A class above the flat classes sums its descendants: vehicle-things holds car, truck
    # and bus.
    vehicles = _sets(tree, ["vehicle-things"])
    _, values, confidence = _flat_answer(model, tree, given, vehicles)
    assert values == [0, 0] and confidence == pytest.approx([0.55, 0.75], abs=1e-5)
    # Without classes, the argmax of its own classes, as before.
    concepts, _, confidence = _flat_answer(model, tree, given, None)
    assert concepts == [tree.id("person"), tree.id("bus")]
    assert confidence == pytest.approx([0.45, 0.40], abs=1e-5)


def test_the_flat_head_answers_unions_in_predict(flat_checkpoint, image_file, tmp_path, run,
                                                 wn):
    out = tmp_path / "flat"
    result = run("predict", flat_checkpoint, image_file, "--classes", "motor vehicle,person",
                 "--out", out, "--json", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    with Image.open(out / "a_labels.png") as labels:
        assert set(np.unique(np.asarray(labels))) <= {0, 1, 255}
    doc = json.loads((out / "a.json").read_text())
    for row in doc["concepts"]:
        assert row["name"] in ("motor vehicle", "person", "other")
        if row["name"] == "motor vehicle":
            assert row["concepts"] == sorted(UNION, key=load_tree().id)
    # The same answer as the model itself, summed, through the inference path.
    model, _, tree, _ = load_model(flat_checkpoint)
    choice = choose_classes(tree, "motor vehicle,person", wn=wn)
    image = torch.from_numpy(np.asarray(Image.open(image_file).convert("RGB")).copy())
    values, _ = Inference(model, classes=choice.concept_sets)(image)
    expected = np.where(values.numpy() < 0, 255, values.numpy())
    with Image.open(out / "a_labels.png") as labels:
        assert np.array_equal(np.asarray(labels), expected)


# ------------------------------------------------------------------------------ outputs


def test_predict_names_a_union_and_its_concepts(dsspn_checkpoint, image_file, tmp_path, run,
                                                wn):
    model, _, tree, _ = load_model(dsspn_checkpoint)
    _steer(model, tree, "truck")
    path = tmp_path / "steered.pt"
    save_checkpoint(path, model=model, tree=tree, step=0, epoch=0,
                    config=TrainConfig(backbone="resnet18", output_stride=16,
                                       head={"hidden": 8}).to_dict())
    out = tmp_path / "out"
    result = run("predict", path, image_file, "--classes", "motor vehicle, sky", "--out", out,
                 "--json", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    with Image.open(out / "a_labels.png") as labels:
        assert (np.asarray(labels) == 0).all()             # every truck pixel: motor vehicle
    (row,) = json.loads((out / "a.json").read_text())["concepts"]
    assert row["name"] == "motor vehicle" and row["label"] == 0 and row["how"] == "below"
    assert row["concepts"] == ["car", "motorcycle", "truck"]
    # A union's path runs down to where its concepts' paths part.
    assert row["path"] == ["entity", "things", "outdoor-super-things", "vehicle-things"]
    assert legend_text(row) == "motor vehicle [0] (car, motorcycle, truck)"


def test_dataset_outputs_name_its_labels_beside_the_concepts(dsspn_checkpoint):
    model, _, tree, _ = load_model(dsspn_checkpoint)
    predictor = Predictor(model, tree, "cityscapes", device="cpu")
    values = np.array([[tree.id("plant-stuff"), tree.id("road")],
                       [tree.id("car"), tree.id("plant-stuff")]])
    rows = {row["name"]: row for row in predictor.summary(values, np.ones(values.shape))}
    assert set(rows) == {"vegetation", "road", "car"}
    vegetation = rows["vegetation"]
    assert vegetation["label"] == 21 and vegetation["concepts"] == ["plant-stuff"]
    assert vegetation["path"][-1] == "plant-stuff" and vegetation["pixels"] == 2
    assert legend_text(vegetation) == "vegetation [21] (plant-stuff)"
    assert legend_text(rows["road"]) == "road [7]"       # named alike: said once
    # Without a dataset: the concept alone.
    plain = Predictor(model, tree, device="cpu").summary(values, np.ones(values.shape))
    assert {legend_text(row) for row in plain} == {"plant-stuff", "road", "car"}


def test_a_label_sets_everything_else_class_takes_the_other_pixels(dsspn_checkpoint,
                                                                   image_file, tmp_path, run):
    """VOC's background (other: true) is not a concept to name: predict --labelset voc writes
    its id where no other VOC class is, and 'hierarchy map voc' says so instead of reporting
    a class it cannot name."""
    result = run("predict", dsspn_checkpoint, image_file, "--labelset", "voc", "--out",
                 tmp_path / "out", "--device", "cpu", "--workers", "0")
    assert result.exit_code == 0, result.stderr
    labels = np.asarray(Image.open(tmp_path / "out" / "a_labels.png"))
    assert set(np.unique(labels)) <= set(range(21))      # background is 0, never 255
    mapped = run("hierarchy", "map", "voc")
    assert mapped.exit_code == 0
    assert "background (id 0): everything else" in mapped.stdout
    assert "problem" not in mapped.stdout
    doc = json.loads(run("hierarchy", "map", "voc", "--json").stdout)
    assert doc["everything_else"] == {"id": 0, "name": "background"}
    assert "background" not in [c["name"] for c in doc["classes"]]
