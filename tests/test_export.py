"""Hierarchical inference exported as one static graph matches PyTorch."""
import numpy as np
import pytest
import torch

from dsspn_cli.engine.checkpoint import load_model, save_checkpoint
from dsspn_cli.engine.config import TrainConfig
from dsspn_cli.engine.export import StaticPredictor
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


def test_onnx_runs_in_onnxruntime_and_matches(checkpoint, tmp_path, run):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    out = tmp_path / "model.onnx"
    result = run("export", checkpoint, "--format", "onnx", "--dataset", "cityscapes",
                 "--size", "64x96", "-o", out)
    assert result.exit_code == 0, result.stderr
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    image = np.random.default_rng(0).standard_normal((1, 3, 64, 96)).astype(np.float32)
    labels, confidence = session.run(None, {"image": image})
    model, *_ = load_model(checkpoint)
    expected, expected_conf = StaticPredictor(model, "cityscapes")(torch.from_numpy(image))
    assert np.mean(labels == expected.numpy()) > 0.999     # float ties may differ
    assert np.allclose(confidence, expected_conf.numpy(), atol=1e-4)


def test_torchscript_export_loads_and_matches(checkpoint, tmp_path, run):
    out = tmp_path / "model.ts.pt"
    result = run("export", checkpoint, "--format", "torchscript", "--size", "64x96", "-o", out)
    assert result.exit_code == 0, result.stderr
    loaded = torch.jit.load(str(out))
    image = torch.randn(1, 3, 64, 96)
    model, *_ = load_model(checkpoint)
    assert torch.equal(loaded(image)[0], StaticPredictor(model)(image)[0])


def test_export_errors(checkpoint, tmp_path, run):
    result = run("export", checkpoint, "--format", "tflite")
    assert result.exit_code == 2 and "use onnx or torchscript" in result.stderr
    result = run("export", tmp_path / "none.pt")
    assert result.exit_code == 2 and "no such checkpoint" in result.stderr
