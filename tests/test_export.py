"""Hierarchical inference exported as one static graph matches PyTorch, at any batch and
size, in a dataset's ids or any vocabulary, with what a user needs in its metadata."""
import json

import numpy as np
import pytest
import torch

from dsspn_cli.engine.checkpoint import load_model, save_checkpoint
from dsspn_cli.engine.config import TrainConfig
from dsspn_cli.engine.export import METADATA_FILE, StaticPredictor
from dsspn_cli.engine.predict import choose_classes
from dsspn_cli.hierarchy.tables import MaskingTable
from dsspn_cli.hierarchy.tree import load_tree
from dsspn_cli.model.contract import Query
from dsspn_cli.model.segmenter import build_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    tree = load_tree()
    config = TrainConfig(backbone="resnet18", output_stride=16, head={"hidden": 8})
    model = build_model(MaskingTable.from_tree(tree), config)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, model=model.eval(), tree=tree, step=0, epoch=0,
                    config=config.to_dict())
    return path


@pytest.mark.parametrize("dataset,level", [("cityscapes", None), (None, None), ("ade", 2)])
def test_static_graph_equals_dynamic_prediction(checkpoint, dataset, level):
    model, *_ = load_model(checkpoint)
    image = torch.randn(1, 3, 64, 96)
    labels, confidence = StaticPredictor(model, dataset, level)(image)
    concepts, expected_confidence = model.predict(image, Query(dataset, level))
    expected = model.concepts_to_labels(concepts, dataset) if dataset else concepts
    assert torch.equal(labels, expected)
    assert torch.allclose(confidence, expected_confidence)


# Batches of two at sizes other than the export's (64x96): the graph has no shape baked in.
SHAPES = [(2, 3, 80, 112), (2, 3, 72, 136)]


def _images(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _session(path):
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_onnx_runs_in_onnxruntime_and_matches(checkpoint, tmp_path, run):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    out = tmp_path / "model.onnx"
    result = run("export", checkpoint, "--format", "onnx", "--dataset", "cityscapes",
                 "--size", "64x96", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert "any batch and size" in result.stdout
    session = _session(out)
    model, *_ = load_model(checkpoint)
    for shape in SHAPES:
        image = _images(shape)
        labels, confidence = session.run(None, {"image": image})
        expected, expected_conf = StaticPredictor(model, "cityscapes")(torch.from_numpy(image))
        assert labels.shape == shape[:1] + shape[2:]
        assert np.mean(labels == expected.numpy()) > 0.999     # float ties may differ
        same = labels == expected.numpy()
        assert np.allclose(confidence[same], expected_conf.numpy()[same], atol=1e-4)
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["mean"]) == [0.485, 0.456, 0.406]
    assert json.loads(meta["std"]) == [0.229, 0.224, 0.225]
    assert meta["input_layout"] == "NCHW" and meta["input_channels"] == "RGB"
    assert json.loads(meta["input_scale"]) == pytest.approx(1 / 255)
    assert meta["dataset"] == "cityscapes" and meta["head"] == "dsspn"
    labels = {row["id"]: row for row in json.loads(meta["labels"])}
    assert labels[21] == {"id": 21, "name": "vegetation", "concepts": ["plant-stuff"]}
    assert labels[7]["name"] == "road" and json.loads(meta["none"])["id"] == 255


def test_onnx_in_a_vocabulary_with_unions(checkpoint, tmp_path, run, wn):
    """--classes 'motor vehicle,sky': the first class is car, motorcycle and truck; the file
    writes 0, 1 and 255 (other), says so in its metadata, and matches PyTorch."""
    pytest.importorskip("onnx")
    out = tmp_path / "classes.onnx"
    result = run("export", checkpoint, "--classes", "motor vehicle,sky", "--size", "64x96",
                 "-o", out)
    assert result.exit_code == 0, result.stderr
    session = _session(out)
    model, _, tree, _ = load_model(checkpoint)
    choice = choose_classes(tree, "motor vehicle,sky", wn=wn)
    static = StaticPredictor(model, choice=choice)
    for shape in SHAPES:
        image = _images(shape, 1)
        labels, confidence = session.run(None, {"image": image})
        expected, expected_conf = static(torch.from_numpy(image))
        assert set(np.unique(labels)) <= {0, 1, 255}
        assert np.mean(labels == expected.numpy()) > 0.999
        # The static graph is the eager prediction read in the classes.
        values, _ = model.predict(torch.from_numpy(image), Query(classes=choice.sets))
        eager = torch.where(values < 0, 255, values)
        assert torch.equal(expected, eager)
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["labels"]) == [
        {"id": 0, "name": "motor vehicle", "concepts": ["car", "motorcycle", "truck"]},
        {"id": 1, "name": "sky", "concepts": ["sky-other"]}]
    assert json.loads(meta["none"]) == {"id": 255, "name": "other"}
    assert meta["dataset"] == "null" and meta["dsspn_version"]


def test_flat_onnx_in_a_vocabulary(tmp_path, run):
    """The flat head's summed probabilities export too (one product, no shape baked in)."""
    pytest.importorskip("onnx")
    torch.manual_seed(0)
    tree = load_tree()
    config = TrainConfig(backbone="resnet18", output_stride=16, head={"type": "flat"})
    path = tmp_path / "flat.pt"
    save_checkpoint(path, model=build_model(MaskingTable.from_tree(tree), config).eval(),
                    tree=tree, step=0, epoch=0, config=config.to_dict())
    out = tmp_path / "flat.onnx"
    result = run("export", path, "--classes", "person,car,sky", "--size", "64x96", "-o", out)
    assert result.exit_code == 0, result.stderr
    session = _session(out)
    model, *_ = load_model(path)
    static = StaticPredictor(model, choice=choose_classes(tree, "person,car,sky"))
    for shape in SHAPES:
        image = _images(shape, 2)
        labels, confidence = session.run(None, {"image": image})
        expected, expected_conf = static(torch.from_numpy(image))
        assert np.mean(labels == expected.numpy()) > 0.999
        assert np.allclose(confidence, expected_conf.numpy(), atol=1e-4)
    assert session.get_modelmeta().custom_metadata_map["head"] == "flat"


def test_torchscript_export_loads_and_matches(checkpoint, tmp_path, run):
    chosen = tmp_path / "mine.yaml"
    chosen.write_text("name: mine\nignore_index: 0\nlabels:\n"
                      "- {id: 7, name: road, synset: road.n.01}\n"
                      "- {id: 9, name: vegetation}\n")
    out = tmp_path / "model.ts.pt"
    result = run("export", checkpoint, "--format", "torchscript", "--labelset", chosen,
                 "--size", "64x96", "-o", out)
    assert result.exit_code == 0, result.stderr
    extra = {METADATA_FILE: ""}
    loaded = torch.jit.load(str(out), _extra_files=extra)
    model, _, tree, _ = load_model(checkpoint)
    static = StaticPredictor(model, choice=choose_classes(tree, labelset=chosen))
    for shape in SHAPES:
        image = torch.from_numpy(_images(shape, 3))
        labels = loaded(image)[0]
        assert set(labels.unique().tolist()) <= {0, 7, 9}
        assert torch.equal(labels, static(image)[0])
    meta = json.loads(extra[METADATA_FILE])
    assert [(row["id"], row["name"]) for row in meta["labels"]] == [(7, "road"),
                                                                     (9, "vegetation")]
    assert meta["none"] == {"id": 0, "name": "other"} and meta["mean"][0] == 0.485


def test_export_errors(checkpoint, tmp_path, run):
    result = run("export", checkpoint, "--format", "tflite")
    assert result.exit_code == 2 and "use onnx or torchscript" in result.stderr
    result = run("export", tmp_path / "none.pt")
    assert result.exit_code == 2 and "no such checkpoint" in result.stderr
    result = run("export", checkpoint, "--classes", "persn", "-o", tmp_path / "x.onnx")
    assert result.exit_code == 2 and "no concept 'persn'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.onnx").exists()
    result = run("export", checkpoint, "--classes", "sky", "--labelset", tmp_path / "l.yaml")
    assert result.exit_code == 2 and "give one of them" in result.stderr
