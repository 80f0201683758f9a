"""Hedged prediction (issue 22): the rule and its curve by hand, the curve's end points and
monotonicity for both heads, the sweep equal to the rule run at each threshold, calibration
on held-out images, and the commands: evaluate --hedge (JSON, calibration, plot of several
checkpoints), predict --hedge (inner concepts, pixels per depth, with --dataset, --classes,
--level and tiles) and export --hedge-threshold."""

import json
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from test_head import forced_head, small_table

from dsspn_cli.data.dataset import SegmentationDataset
from dsspn_cli.data.sample import DATASETS, FOLDERS, write_sample_data
from dsspn_cli.engine.checkpoint import load_model, save_checkpoint
from dsspn_cli.engine.config import TrainConfig
from dsspn_cli.engine.evaluate import evaluate
from dsspn_cli.engine.export import METADATA_FILE, StaticPredictor
from dsspn_cli.engine.hedging import (
    HedgeCurve,
    calibrated_threshold,
    calibration_path,
    operating_index,
    specificity,
)
from dsspn_cli.engine.infer import Inference, LabelledImages
from dsspn_cli.engine.predict import choose_classes
from dsspn_cli.hierarchy.tables import MaskingTable
from dsspn_cli.hierarchy.tree import load_tree
from dsspn_cli.model.config import FlatSettings
from dsspn_cli.model.contract import Query
from dsspn_cli.model.flat import FlatHead
from dsspn_cli.model.hedging import hedge
from dsspn_cli.model.masking import MaskingTensors
from dsspn_cli.model.segmenter import build_model

FAST = ["--device", "cpu", "--workers", "0"]
# Calibrated on the validation images, the accuracy on fresh images of the same kind may fall
# short of the target by at most this much (a handful of small images: pixels are not
# independent draws).
TOLERANCE = 0.05


# ------------------------------------------------------------------------------ by hand


def test_the_curve_of_a_small_case_computed_by_hand():
    """Four pixels of dataset 'a' (classes animal, cat, dog, car) on the tree entity ->
    animal -> cat, dog; entity -> vehicle -> car, bus."""
    tree = small_table()
    masking = MaskingTensors(MaskingTable.from_tree(tree))
    E, A, V, cat, dog, car = (tree.id(n) for n in ("entity", "animal", "vehicle", "cat",
                                                     "dog", "car"))
    concepts = torch.tensor([[E, E, E, E], [A, A, V, V], [cat, dog, car, car]])[:, None]
    confidence = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.9, 0.7, 0.95, 0.4],
                               [0.6, 0.3, 0.9, 0.2]])[:, None]
    target = torch.tensor([[cat, cat, car, dog]])
    curve = HedgeCurve(masking, "a", thresholds=(0.0, 0.5, 0.8, 1.0))
    curve.update(concepts, confidence, target)
    doc = curve.to_json()
    # animal holds 3 of the 4 classes; vehicle only car, so saying 'vehicle' in 'a' is
    # saying 'car': specificity 1.
    gain = math.log(4 / 3) / math.log(4)
    assert specificity(masking.table, "a")[A] == pytest.approx(gain)
    assert specificity(masking.table, "a")[V] == pytest.approx(1.0)
    # t = 0: the leaves, cat dog car car (2 right); t = 0.5: cat animal car entity (all
    # right); t = 0.8: animal entity car entity; t = 1: the root.
    assert doc["accuracy"] == pytest.approx([0.5, 1.0, 1.0, 1.0])
    assert doc["specificity"] == pytest.approx([1.0, (2 + gain) / 4, (1 + gain) / 4, 0.0],
                                               abs=1e-6)      # written to 6 places
    assert doc["mean_depth"] == pytest.approx([2.0, 1.25, 0.75, 0.0])
    assert doc["pixels"] == 4
    assert doc["operating_points"]["0.9"]["threshold"] == 0.5
    assert doc["operating_points"]["0.9"]["stopped_at_depth"] == {"0": 1, "1": 1, "2": 2}
    # The rule itself gives those answers.
    for t, expected in ((0.0, [cat, dog, car, car]), (0.5, [cat, A, car, E]),
                        (0.8, [A, E, car, E]), (1.0, [E, E, E, E])):
        found, sure = hedge(concepts[None], confidence[None], t)
        assert found[0, 0].tolist() == expected
        assert (sure > t).all() or t == 1.0


def test_the_operating_point_is_where_the_accuracy_stays_at_the_target():
    accuracy = [0.5, 0.92, 0.88, 0.95, 1.0]        # not monotone: 0.92 does not count
    assert operating_index(accuracy, 0.9) == 3
    assert operating_index(accuracy, 0.5) == 0
    assert operating_index(accuracy, 1.0) == 4


def test_dsspn_confidence_per_level_is_the_product_of_the_scores():
    tree = small_table()
    head, table = forced_head(tree, {"entity": [2.0, -1.0], "animal": [-3.0, 1.0],
                                     "vehicle": [0.0, 3.0]})
    features = torch.randn(1, 4, 3, 3)
    concepts, confidence = head.levels(features, Query(size=(6, 6)))
    first, second = torch.sigmoid(torch.tensor(2.0)), torch.sigmoid(torch.tensor(1.0))
    assert concepts[0, :, 0, 0].tolist() == [tree.id("entity"), tree.id("animal"),
                                             tree.id("dog")]
    assert torch.allclose(confidence[0, :, 0, 0], torch.stack([torch.tensor(1.0), first,
                                                               first * second]))
    hedged, _ = head.predict(features, Query(size=(6, 6), hedge=float(first * second)))
    assert (hedged == tree.id("animal")).all()        # dog's confidence does not exceed it
    assert torch.equal(head.predict(features, Query(size=(6, 6), hedge=0.0))[0],
                       head.predict(features, Query(size=(6, 6)))[0])


def test_the_flat_head_sums_its_probabilities_up_the_tree():
    """Classes animal .05, cat .30, dog .25, vehicle .01, car .35, bus .04: animal holds .60,
    vehicle .40; the likeliest class is car."""
    tree = small_table()
    table = MaskingTable.from_tree(tree)
    head = FlatHead(table, 4, FlatSettings())
    wanted = {"animal": 0.05, "cat": 0.30, "dog": 0.25, "vehicle": 0.01, "car": 0.35,
              "bus": 0.04}
    with torch.no_grad():
        for i, branch in enumerate(head.branches):
            branch.weight.zero_()
            branch.bias.copy_(torch.tensor([math.log(wanted[tree.names[c]]) if i == 0 else 0.0
                                            for c in head.class_concept.tolist()]))
    features = torch.randn(1, 4, 2, 2)
    concepts, confidence = head.levels(features, Query())
    assert concepts[0, :, 0, 0].tolist() == [tree.id("entity"), tree.id("animal"),
                                             tree.id("car")]
    assert confidence[0, :, 0, 0].tolist() == pytest.approx([1.0, 0.60, 0.35], abs=1e-5)
    for t, name in ((0.0, "car"), (0.3, "car"), (0.5, "animal"), (0.65, "entity")):
        found, _ = head.predict(features, Query(hedge=t))
        assert (found == tree.id(name)).all(), t
    assert torch.equal(head.predict(features, Query(hedge=0.0))[0],
                       head.predict(features, Query())[0])


# ------------------------------------------------------------------------------ models


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """Validation images (the sample data), and fresh images of the same kind drawn with
    another seed, for the held-out check."""
    root = tmp_path_factory.mktemp("sample")
    write_sample_data(root / "val", seed=0, images=4, size=(64, 128))
    write_sample_data(root / "fresh", seed=1, images=4, size=(64, 128))
    return root


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """An (untrained) DSSPN and flat model, each in its own folder (calibrations go beside)."""
    torch.manual_seed(0)
    tree = load_tree()
    found = {}
    for name, head in (("dsspn", {"hidden": 8}), ("flat", {"type": "flat"})):
        config = TrainConfig(backbone="resnet18", output_stride=16, head=head)
        path = tmp_path_factory.mktemp(name) / f"{name}.pt"
        save_checkpoint(path, model=build_model(MaskingTable.from_tree(tree), config).eval(),
                        tree=tree, step=0, epoch=0, config=config.to_dict())
        found[name] = path
    return found


def _data_args(root, names=DATASETS):
    return [arg for name in names for arg in ("--data", f"{name}={root / FOLDERS[name]}")]


def _hierarchical_accuracy(model, dataset, threshold=None) -> float:
    """Right pixels over labelled ones of ``model``'s (hedged) predictions, counted here
    from the prediction alone."""
    levels = model.masking.concept_at_level
    depth = torch.tensor(model.masking.table.depth)
    infer = Inference(model.eval(), dataset.name, hedge=threshold)
    right = total = 0
    for index in range(len(dataset)):
        item = LabelledImages(dataset)[index]
        concepts, _ = infer(item["image"])
        valid = item["target"] >= 0
        found, truth = concepts[valid], item["target"][valid]
        right += int((levels[truth, depth[found]] == found).sum())
        total += int(valid.sum())
    return right / total


@pytest.mark.parametrize("head", ["dsspn", "flat"])
def test_curve_end_points_monotonicity_and_the_rule_at_each_threshold(head, checkpoints,
                                                                       sample):
    model, table, _, _ = load_model(checkpoints[head])
    data = SegmentationDataset(sample / "val" / "cityscapes", "cityscapes", "val", table)
    scores = evaluate(model, data, hedge=True)
    curve = scores["hedging"]
    t = curve["thresholds"]
    assert t[0] == 0.0 and t[-1] == 1.0 and t == sorted(t)
    # No hedging: today's answer, its hierarchical accuracy counted on its own.
    assert curve["accuracy"][0] == pytest.approx(_hierarchical_accuracy(model, data), abs=1e-6)
    # Full hedging: every pixel at the root, always right, and nothing said.
    assert (curve["accuracy"][-1], curve["specificity"][-1], curve["mean_depth"][-1]) == \
        (1.0, 0.0, 0.0)
    # The ordinary scores come from the same pass, unchanged.
    assert scores["mIoU"] == evaluate(model, data)["mIoU"]
    # DSSPN's answers are nested along its path: accuracy only rises and specificity only
    # falls with the threshold; the flat head's from 1/2 up, where its concepts are nested.
    start = 0 if head == "dsspn" else t.index(0.5)
    for key, sign in (("accuracy", 1), ("specificity", -1), ("mean_depth", -1)):
        values = curve[key][start:]
        assert all(sign * (b - a) >= -1e-9 for a, b in zip(values, values[1:])), key
    # The sweep equals the rule run at each threshold (one pass against one per threshold).
    for threshold in (0.3, 0.6, 0.9):
        j = t.index(threshold)
        assert curve["accuracy"][j] == pytest.approx(
            _hierarchical_accuracy(model, data, threshold), abs=1e-6)


@pytest.fixture(scope="module")
def calibrated(checkpoints, sample, tmp_path_factory):
    """evaluate --hedge of both models on the validation images: JSON, calibration beside
    each checkpoint, and one plot of both."""
    from dsspn_cli.cli.main import main

    out = tmp_path_factory.mktemp("evaluated")
    for name in ("dsspn", "flat"):
        args = ["evaluate", checkpoints[name], *_data_args(sample / "val"), "--hedge",
                "--json", out / f"{name}.json", *FAST]
        if name == "flat":
            args += ["--plot", out / "both.png", "--compare", out / "dsspn.json"]
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            assert not exc.code
    return out


def test_evaluate_hedge_writes_curves_calibration_and_a_plot_of_both(calibrated, checkpoints):
    for name in ("dsspn", "flat"):
        doc = json.loads((calibrated / f"{name}.json").read_text())
        for dataset in DATASETS:
            curve = doc[dataset]["hedging"]
            assert curve["head"] == name and curve["checkpoint"] == str(checkpoints[name])
            assert len(curve["accuracy"]) == len(curve["thresholds"]) == \
                len(curve["specificity"]) == len(curve["mean_depth"])
            assert set(curve["operating_points"]) == {"0.8", "0.9", "0.95", "0.99"}
        saved = json.loads(calibration_path(checkpoints[name]).read_text())
        assert set(saved["accuracy"]) == set(DATASETS) | {"all"}
        assert saved["pixels"]["all"] == sum(doc[d]["hedging"]["pixels"] for d in DATASETS)
    with Image.open(calibrated / "both.png") as image:
        assert image.format == "PNG" and image.width > 600


def test_calibration_reaches_its_target_on_held_out_images(calibrated, checkpoints, sample):
    """The threshold found on the validation images keeps the target on fresh ones."""
    for name in ("dsspn", "flat"):
        path = checkpoints[name]
        model, table, _, _ = load_model(path)
        right = pixels = 0
        curves = {}
        for dataset in DATASETS:
            fresh = SegmentationDataset(sample / "fresh" / FOLDERS[dataset], dataset, "train",
                                        table)
            curves[dataset] = evaluate(model, fresh, hedge=True)["hedging"]
        for target in (0.8, 0.9, 0.95):
            threshold, info = calibrated_threshold(calibration_path(path), path, target)
            assert info["curve"] == "all" and info["accuracy"] >= target
            j = curves[DATASETS[0]]["thresholds"].index(threshold)
            right = sum(curve["right"][j] for curve in curves.values())
            pixels = sum(curve["pixels"] for curve in curves.values())
            assert right / pixels >= target - TOLERANCE, (name, target, right / pixels)


def test_evaluate_hedge_option_errors(checkpoints, sample, tmp_path, run):
    data = _data_args(sample / "val", ["cityscapes"])
    result = run("evaluate", checkpoints["dsspn"], *data, "--plot", tmp_path / "p.png", *FAST)
    assert result.exit_code == 2 and "--hedge" in result.stderr
    result = run("evaluate", checkpoints["dsspn"], *data, "--hedge", "--compare",
                 tmp_path / "x.json", *FAST)
    assert result.exit_code == 2 and "--plot" in result.stderr
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"cityscapes": {"mIoU": 1.0}}))
    result = run("evaluate", checkpoints["dsspn"], *data, "--hedge", "--plot",
                 tmp_path / "p.png", "--compare", plain, *FAST)
    assert result.exit_code == 2 and "no hedging curves" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------ predict


def _image(path, seed=3):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (64, 128, 3), dtype=np.uint8)).save(path)
    return path


def _json(folder, stem="a"):
    return json.loads((folder / f"{stem}.json").read_text())


def test_predict_hedge_shows_inner_concepts_and_pixels_per_depth(calibrated, checkpoints,
                                                                 tmp_path, run):
    path = checkpoints["dsspn"]
    image = _image(tmp_path / "a.png")
    tree = load_tree()
    result = run("predict", path, image, "--hedge", "0.9", "--json", "--out", tmp_path / "o",
                 *FAST)
    assert result.exit_code == 0, result.stderr
    doc = _json(tmp_path / "o")
    threshold, _ = calibrated_threshold(calibration_path(path), path, 0.9)
    assert doc["hedge"]["threshold"] == threshold and doc["hedge"]["curve"] == "all"
    assert sum(doc["stopped_at_depth"].values()) == 64 * 128
    inner = [row for row in doc["concepts"] if tree.children(row["name"])]
    assert inner, "an untrained model at 0.9 stops above the leaves"
    for row in doc["concepts"]:
        assert row["depth"] == len(row["path"]) - 1
        assert doc["stopped_at_depth"][str(row["depth"])] >= row["pixels"]
    assert (tmp_path / "o" / "a_legend.png").is_file()
    # With a dataset its own curve gives the threshold.
    result = run("predict", path, image, "--hedge", "0.9", "--dataset", "cityscapes",
                 "--json", "--out", tmp_path / "d", *FAST)
    assert result.exit_code == 0, result.stderr
    assert _json(tmp_path / "d")["hedge"]["curve"] == "cityscapes"


def _labels(path):
    with Image.open(path) as image:
        return np.asarray(image)


def test_hedge_threshold_end_points_and_composition(checkpoints, tmp_path, run, wn):
    path = checkpoints["dsspn"]
    image = _image(tmp_path / "a.png")
    tree = load_tree()
    table = MaskingTable.from_tree(tree)

    def predicted(name, *args):
        result = run("predict", path, image, "--json", "--out", tmp_path / name, *args, *FAST)
        assert result.exit_code == 0, result.stderr
        return _json(tmp_path / name), _labels(tmp_path / name / "a_labels.png")

    _, plain = predicted("plain", "--dataset", "cityscapes")
    _, none = predicted("none", "--dataset", "cityscapes", "--hedge-threshold", "0")
    assert np.array_equal(plain, none)                       # 0 hedges nothing
    doc, _ = predicted("root", "--hedge-threshold", "1")
    assert [row["name"] for row in doc["concepts"]] == [tree.names[0]]    # 1: the root
    # --level: no pixel goes below it.
    doc, _ = predicted("level", "--level", "1", "--hedge-threshold", "0.3")
    assert all(row["depth"] <= 1 for row in doc["concepts"])
    # --dataset: only the dataset's concepts and those above them.
    labelled = set(table.dataset("cityscapes").concept_label)
    allowed = labelled | {a for c in labelled for a in table.ancestors(c)}
    doc, _ = predicted("dataset", "--dataset", "cityscapes", "--hedge-threshold", "0.3")
    assert all(tree.id(row["concepts"][0]) in allowed for row in doc["concepts"])
    # --classes: a class, 'other', or a concept above the classes (written as 'other').
    doc, labels = predicted("classes", "--classes", "car,person,sky",
                            "--hedge-threshold", "0.5")
    choice = choose_classes(tree, "car,person,sky", wn=wn)
    above = {tree.names[a] for s in choice.sets for c in s for a in table.ancestors(c)}
    for row in doc["concepts"]:
        assert row["name"] in (*choice.names, "other") or row["name"] in above
        if row["name"] in above:            # the classes have no id for it
            assert row["label"] == 255 and row["depth"] == len(tree.ancestors(row["name"]))
    assert set(np.unique(labels)) <= {0, 1, 2, 255}
    assert any(row["name"] in above for row in doc["concepts"])


def test_hedged_tiles_are_the_hedged_levels_of_the_tiles(checkpoints):
    model, *_ = load_model(checkpoints["dsspn"])
    image = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (96, 160, 3),
                                                               dtype=np.uint8))
    hedged, sure = Inference(model, "ade", tile=64, hedge=0.4)(image)
    concepts, confidence = Inference(model, "ade", tile=64, levels=True)(image)
    assert concepts.shape[-2:] == (96, 160) and concepts.shape[0] == confidence.shape[0]
    expected, expected_sure = hedge(concepts[None], confidence[None], 0.4)
    assert torch.equal(hedged, expected[0]) and torch.allclose(sure, expected_sure[0])


def test_predict_hedge_errors(calibrated, checkpoints, tmp_path, run):
    image = _image(tmp_path / "a.png")
    lonely = tmp_path / "lonely.pt"
    shutil.copy(checkpoints["dsspn"], lonely)
    cases = [
        ([lonely, image, "--hedge", "0.9"], "no calibration"),
        ([checkpoints["dsspn"], image, "--hedge", "0.9", "--hedge-threshold", "0.5"],
         "not both"),
        ([checkpoints["dsspn"], image, "--hedge-threshold", "1.5"], "from 0"),
        ([checkpoints["dsspn"], image, "--hedge", "1.5"], "target accuracy"),
        ([checkpoints["flat"], image, "--hedge", "0.9", "--calibration",
          calibration_path(checkpoints["dsspn"])], "another checkpoint"),
    ]
    for args, message in cases:
        result = run("predict", *args, "--out", tmp_path / "o", *FAST)
        assert result.exit_code == 2, (args, result.stderr)
        assert message in result.stderr and result.stderr.startswith("error:")
        assert len(result.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------ export


def test_export_with_a_fixed_threshold(checkpoints, tmp_path, run):
    path = checkpoints["dsspn"]
    out = tmp_path / "hedged.ts.pt"
    result = run("export", path, "--format", "torchscript", "--dataset", "cityscapes",
                 "--hedge-threshold", "0.4", "--size", "64x96", "-o", out)
    assert result.exit_code == 0, result.stderr
    extra = {METADATA_FILE: ""}
    loaded = torch.jit.load(str(out), _extra_files=extra)
    info = json.loads(extra[METADATA_FILE])
    assert info["hedge_threshold"] == 0.4 and "concepts:" in info["outputs"]
    model, *_ = load_model(path)
    image = torch.randn(2, 3, 80, 112)
    labels, confidence, concepts = loaded(image)
    expected, sure = model.predict(image, Query("cityscapes", hedge=0.4))
    assert torch.equal(concepts, expected) and torch.allclose(confidence, sure)
    assert torch.equal(labels, model.concepts_to_labels(expected, "cityscapes"))


def test_onnx_hedged_in_a_vocabulary_matches(checkpoints, tmp_path, run, wn):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")

    out = tmp_path / "hedged.onnx"
    result = run("export", checkpoints["flat"], "--classes", "car,person,sky",
                 "--hedge-threshold", "0.5", "--size", "64x96", "-o", out)
    assert result.exit_code == 0, result.stderr
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    model, _, tree, _ = load_model(checkpoints["flat"])
    static = StaticPredictor(model, choice=choose_classes(tree, "car,person,sky", wn=wn), hedge=0.5)
    image = np.random.default_rng(1).standard_normal((2, 3, 72, 136)).astype(np.float32)
    found = session.run(None, {"image": image})
    expected = static(torch.from_numpy(image))
    assert len(found) == 3
    for got, want in zip(found, expected):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-5)
