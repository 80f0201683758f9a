import math

import torch
from test_tree import small_tree

from dsspn_cli.engine.metrics import ConfusionMatrix
from dsspn_cli.hierarchy.tables import MaskingTable


def reference_iou(pred, gt, n, evaluated):
    """cityscapesScripts' getIouScoreForLabel, written out plainly."""
    scores = []
    for c in range(n):
        tp = sum(1 for p, g in zip(pred, gt) if g == c and p == c)
        fn = sum(1 for p, g in zip(pred, gt) if g == c and p != c)
        fp = sum(1 for p, g in zip(pred, gt) if p == c and g != c and g in evaluated)
        scores.append(tp / (tp + fn + fp) if tp + fn + fp else float("nan"))
    return scores


def test_iou_matches_the_cityscapes_definition():
    g = torch.Generator().manual_seed(0)
    n = 5
    gt = torch.randint(-1, n + 1, (4000,), generator=g)          # -1 and n: not evaluated
    pred = torch.randint(-1, n + 2, (4000,), generator=g)         # some invalid predictions
    matrix = ConfusionMatrix(n)
    matrix.update(pred, gt)
    scores = matrix.scores()
    expected = reference_iou(pred.tolist(), gt.tolist(), n, set(range(n)))
    for c in range(n):
        assert math.isclose(scores["per_class"][str(c)]["iou"], 100 * expected[c], rel_tol=1e-9)
    assert math.isclose(scores["mIoU"], 100 * sum(expected) / n, rel_tol=1e-9)
    valid = (gt >= 0) & (gt < n)
    assert math.isclose(scores["pixel_acc"],
                        100 * float((pred[valid] == gt[valid]).double().mean()), rel_tol=1e-9)


def test_absent_classes_are_left_out_of_the_mean():
    matrix = ConfusionMatrix(3)
    matrix.update(torch.tensor([0, 0, 1]), torch.tensor([0, 0, 1]))
    scores = matrix.scores(["a", "b", "c"])
    assert scores["mIoU"] == 100.0 and scores["per_class"]["c"]["iou"] is None


def test_nothing_evaluated_scores_none():
    """No evaluated pixel (or no class at all): every mean is None (JSON null), not NaN."""
    for n in (0, 3):
        matrix = ConfusionMatrix(n)
        matrix.update(torch.tensor([0, 1, 5]), torch.tensor([-1, n, 7]))
        scores = matrix.scores()
        assert scores["mIoU"] is scores["pixel_acc"] is scores["mean_acc"] is None
        assert all(c["iou"] is c["acc"] is None for c in scores["per_class"].values())


def test_concept_levels_cut_the_tree():
    tree = small_tree()      # entity > animal > cat, dog; entity > vehicle > car, bus
    levels = torch.tensor(MaskingTable.from_tree(tree).levels())
    assert levels[tree.id("cat")].tolist() == [tree.id("entity"), tree.id("animal"),
                                               tree.id("cat")]
    assert levels[tree.id("vehicle")].tolist() == [tree.id("entity"), tree.id("vehicle"),
                                                   tree.id("vehicle")]
