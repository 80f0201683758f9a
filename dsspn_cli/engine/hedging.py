"""The accuracy-specificity curve of hedged prediction, its calibration and its plot.

Hedged prediction (``model/hedging.py``) stops each pixel at the deepest concept of its path
whose confidence exceeds a threshold t. ``dsspn evaluate --hedge`` scores it for every t of
``THRESHOLDS`` at once, from one forward pass per image: the model's ``levels`` give each
pixel's concept and confidence at every depth, and since a pixel's answer only climbs as t
grows, the counts at every t follow from where each depth's confidence falls among the
thresholds (``HedgeCurve.update``), never from running the model again.

- Hierarchical accuracy: a pixel is right when its concept is its true concept or an
  ancestor of it (the root is always right).
- Specificity: the information gain of the concept, log(N / n) / log(N), N the dataset's
  classes (its label concepts: the leaves of the part of the tree it labels) and n those at
  or below the concept: 1 for a class, 0 at the root. A class with classes of its own below
  (ADE20K's 'chair' beside 'armchair') counts them all, so it scores below 1. Mean depth
  (0 = the root) beside it.
- Calibration: the operating point for a target accuracy is the smallest t from which the
  accuracy on the scored (validation) images stays at or above the target. ``evaluate
  --hedge`` saves the curves in a small JSON beside the checkpoint (``CKPT.hedging.json``,
  bound to the checkpoint by its SHA-256), from which ``predict --hedge TARGET`` reads the
  threshold: the dataset's own curve with ``--dataset``, else the pooled one.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch

from dsspn_cli.errors import UserError

# The thresholds scored: every 0.005, and closer to 1, where a trained model's products of
# near-certain scores sit and high targets are decided.
THRESHOLDS = tuple(sorted({round(i / 200, 3) for i in range(201)} |
                          {round(1 - 10 ** -e, 8) for e in (2.5, 3, 3.5, 4, 4.5, 5, 6, 7)}))
TARGETS = (0.8, 0.9, 0.95, 0.99)     # the operating points a report lists
KIND = "dsspn hedging calibration"
VERSION = 1


def calibration_path(checkpoint) -> Path:
    """Where ``evaluate --hedge`` saves the calibration and ``predict --hedge`` looks for it:
    beside the checkpoint, ``best.pt`` -> ``best.hedging.json``."""
    return Path(checkpoint).with_suffix(".hedging.json")


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def specificity(table, dataset: str) -> list[float]:
    """Each concept's specificity within ``dataset`` (see the module's text); a concept
    with no class of the dataset at or below it (no prediction for the dataset lands
    there) scores as a class."""
    classes = set(table.dataset(dataset).concept_label)
    below = [0] * len(table.concepts)
    for concept in classes:
        for above in table.ancestors(concept) + [concept]:
            below[above] += 1
    total = len(classes)
    if total <= 1:                  # one class: no information to gain but leaving the root
        return [0.0 if not table.ancestors(c) else 1.0 for c in range(len(below))]
    return [math.log(total / max(n, 1)) / math.log(total) for n in below]


class HedgeCurve:
    """Counts of hedged prediction on one dataset at every threshold: per threshold, the
    pixels at each concept and the pixels right (``matrix``, int64, J x (C + 1): summed
    exactly over torchrun's ranks as the confusion matrices are)."""

    def __init__(self, masking, dataset: str, device=None,
                 thresholds: tuple[float, ...] = THRESHOLDS):
        table = masking.table
        device = device or masking.concept_at_level.device
        self.dataset = dataset
        self.thresholds = list(thresholds)
        # float32, as the rule compares (a confidence > t) at prediction
        self._t = torch.tensor(self.thresholds, dtype=torch.float32, device=device)
        self.levels = masking.concept_at_level.to(device)
        self.depth = torch.tensor(table.depth, device=device)
        self.specificity = torch.tensor(specificity(table, dataset), dtype=torch.float64)
        self.concepts = len(table.concepts)
        self.matrix = torch.zeros(len(self.thresholds), self.concepts + 1, dtype=torch.int64,
                                  device=device)

    @torch.no_grad()
    def update(self, concepts: torch.Tensor, confidence: torch.Tensor,
               target: torch.Tensor) -> None:
        """Add an image: ``concepts`` and ``confidence`` its levels (L x H x W), ``target``
        its concept map (H x W, -1 unlabelled)."""
        valid = target >= 0
        g = concepts[:, valid]                       # L x P: each pixel's concept per level
        c = confidence[:, valid].float()
        truth = target[valid]
        right = (self.levels[truth[None].expand_as(g), self.depth[g]] == g).long()
        # Threshold j keeps level d of a pixel when its confidence there exceeds t_j, that
        # is when j < (the number of thresholds below that confidence): the answer at j is
        # level 0 plus, for each level kept, the step from the level above to it.
        width = self.concepts + 1
        rows = len(self.thresholds) + 1
        # Counted in int64 with index_add_ (exact, and no read of the device's values,
        # which bincount makes on CUDA to size its output).
        changes = torch.zeros(rows * width, dtype=torch.int64, device=g.device)
        for d in range(1, g.shape[0]):
            reach = torch.searchsorted(self._t, c[d].contiguous(), right=False) * width
            steps = torch.cat([reach + g[d], reach + g[d - 1], reach + self.concepts])
            weights = torch.cat([torch.ones_like(g[d]), -torch.ones_like(g[d]),
                                 right[d] - right[d - 1]])
            changes.index_add_(0, steps, weights)
        # Row j sums the changes of the levels that threshold j keeps (the rows below it).
        kept = changes.view(rows, width).flip(0).cumsum(0).flip(0)[1:]
        base = torch.zeros(width, dtype=torch.int64, device=g.device)
        base.index_add_(0, g[0], torch.ones_like(g[0]))
        base[self.concepts] = right[0].sum()
        self.matrix += kept + base

    def pixels(self) -> int:
        return int(self.matrix[0, :self.concepts].sum())

    def to_json(self) -> dict:
        """The curve: per threshold, hierarchical accuracy, specificity, mean depth (lists
        in the order of ``thresholds``), and the operating points of ``TARGETS``."""
        counts = self.matrix.cpu()
        pixels = max(self.pixels(), 1)
        concept_counts = counts[:, :self.concepts].double()
        depth = torch.tensor(self.depth.tolist(), dtype=torch.float64)
        doc = {
            "thresholds": self.thresholds,
            "accuracy": _rounded(counts[:, self.concepts].double() / pixels),
            "specificity": _rounded(concept_counts @ self.specificity / pixels),
            "mean_depth": _rounded(concept_counts @ depth / pixels),
            "pixels": self.pixels(),
            "right": counts[:, self.concepts].tolist(),
        }
        per_depth = torch.zeros(len(self.thresholds), int(depth.max()) + 1, dtype=torch.int64)
        per_depth.index_add_(1, self.depth.cpu(), counts[:, :self.concepts])
        doc["operating_points"] = {
            str(target): point(doc, target, per_depth) for target in TARGETS}
        return doc


def _rounded(values: torch.Tensor) -> list[float]:
    return [round(float(v), 6) for v in values]


def operating_index(accuracy: list[float], target: float) -> int | None:
    """The index of the smallest threshold from which ``accuracy`` stays at or above
    ``target`` (thresholds ascending; the last, 1, is the root's perfect accuracy); None
    when no pixel was scored."""
    found = None
    for j in range(len(accuracy) - 1, -1, -1):
        if accuracy[j] < target:
            break
        found = j
    return found


def point(curve: dict, target: float, per_depth=None) -> dict | None:
    """The operating point of ``target`` on a curve (``HedgeCurve.to_json``)."""
    if not curve.get("pixels"):
        return None
    j = operating_index(curve["accuracy"], target)
    if j is None:
        return None
    found = {"threshold": curve["thresholds"][j], "accuracy": curve["accuracy"][j],
             "specificity": curve["specificity"][j], "mean_depth": curve["mean_depth"][j]}
    if per_depth is not None:
        found["stopped_at_depth"] = {str(d): int(n) for d, n in enumerate(per_depth[j])}
    return found


# ------------------------------------------------------------------------------ calibration


def pooled_curve(curves: dict[str, dict]) -> dict:
    """Several datasets' curves (``HedgeCurve.to_json``) as one, their pixels summed: the
    accuracy from the pixels right, specificity and mean depth weighted by pixels (each
    pixel's specificity is its own dataset's)."""
    thresholds = next(iter(curves.values()))["thresholds"]
    pixels = sum(curve["pixels"] for curve in curves.values())
    right = [sum(curve["right"][j] for curve in curves.values())
             for j in range(len(thresholds))]
    doc = {"thresholds": thresholds, "pixels": pixels, "right": right,
           "accuracy": [round(r / max(pixels, 1), 6) for r in right]}
    for key in ("specificity", "mean_depth"):
        doc[key] = [round(sum(curve[key][j] * curve["pixels"] for curve in curves.values())
                          / max(pixels, 1), 6) for j in range(len(thresholds))]
    return doc


def calibration(checkpoint, curves: dict[str, dict], splits: dict[str, str]) -> dict:
    """The calibration file's content: each dataset's accuracy per threshold, and the
    pooled accuracy of all of them (pixels summed), bound to the checkpoint's bytes."""
    pooled = pooled_curve(curves)
    thresholds = pooled["thresholds"]
    return {
        "kind": KIND, "version": VERSION,
        "checkpoint": str(checkpoint), "sha256": file_sha256(checkpoint),
        "rule": "each pixel stops at the deepest concept of its path whose confidence "
                "exceeds the threshold; the threshold for a target accuracy is the smallest "
                "from which the accuracy below stays at or above it",
        "splits": dict(splits),
        "thresholds": thresholds,
        "pixels": {**{name: curve["pixels"] for name, curve in curves.items()},
                   "all": pooled["pixels"]},
        "accuracy": {**{name: curve["accuracy"] for name, curve in curves.items()},
                     "all": pooled["accuracy"]},
    }


def calibrated_threshold(path, checkpoint, target: float,
                         dataset: str | None = None) -> tuple[float, dict]:
    """The threshold of ``target`` from the calibration file ``path`` of ``checkpoint``:
    with the dataset's own curve when it was calibrated on it, else the pooled one.
    Returns it and what it rests on (curve, accuracy there, file)."""
    from dsspn_cli.files import read_json, stat_path

    if not 0.0 < target <= 1.0:
        raise UserError(f"--hedge {target:g}: give a target accuracy above 0 and at most 1 "
                        "(0.9 = right on nine pixels in ten)")
    if stat_path(path) is None:
        raise UserError(f"--hedge {target:g}: no calibration at {path}; run 'dsspn evaluate "
                        f"{checkpoint} --hedge' on validation data first (it writes it), or "
                        "give --hedge-threshold")
    doc = read_json(path, "hedging calibration")
    try:
        if doc["kind"] != KIND or doc["version"] != VERSION:
            raise ValueError
        thresholds, curves = list(doc["thresholds"]), dict(doc["accuracy"])
        sha = doc["sha256"]
        if any(len(curve) != len(thresholds) for curve in curves.values()):
            raise ValueError
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{path}: not a dsspn hedging calibration (write one with 'dsspn "
                        "evaluate CKPT --hedge')") from None
    if sha != file_sha256(checkpoint):
        raise UserError(f"{path}: calibrates another checkpoint than {checkpoint} (its bytes "
                        f"differ); run 'dsspn evaluate {checkpoint} --hedge' again")
    name = dataset if dataset in curves else "all"
    j = operating_index(curves[name], target)
    if j is None:
        raise UserError(f"{path}: its curve '{name}' scored no pixels; calibrate on "
                        "labelled images")
    return float(thresholds[j]), {"curve": name, "accuracy": curves[name][j],
                                  "calibration": str(path)}


# ------------------------------------------------------------------------------ reports


def curve_rows(name: str, curve: dict) -> list[tuple[str, ...]]:
    """A dataset's rows of the printed report: no hedging, each target's operating point,
    full hedging."""
    rows = []
    last = len(curve["thresholds"]) - 1
    for label, j in (("none (leaves)", 0), *((f"accuracy {t:g}", operating_index(
            curve["accuracy"], t)) for t in TARGETS), ("full (root)", last)):
        if j is None:
            continue
        rows.append((name, label, f"{curve['thresholds'][j]:g}",
                     f"{100 * curve['accuracy'][j]:.2f}",
                     f"{curve['specificity'][j]:.3f}", f"{curve['mean_depth'][j]:.2f}"))
        name = ""
    return rows


CURVE_COLUMNS = ("dataset", "hedging", "threshold", "hier. accuracy", "specificity",
                 "mean depth")


def read_curves(path) -> tuple[str, dict[str, dict]]:
    """The curves an earlier ``evaluate --hedge --json`` wrote, with the name to show them
    under (the checkpoint they score)."""
    from dsspn_cli.files import read_json

    doc = read_json(path, "evaluation JSON")
    curves = {}
    if isinstance(doc, dict):
        for name, scores in doc.items():
            curve = scores.get("hedging") if isinstance(scores, dict) else None
            if isinstance(curve, dict) and _is_curve(curve):
                curves[name] = curve
    if not curves:
        raise UserError(f"--compare {path}: holds no hedging curves; write them with "
                        "'dsspn evaluate CKPT --hedge --json FILE'")
    return curve_label(curves, str(path)), curves


def curve_label(curves: dict[str, dict], default: str = "") -> str:
    """A plot's name for a checkpoint's curves: its path and head ('best.pt (dsspn)')."""
    curve = next(iter(curves.values()))
    name = str(curve.get("checkpoint") or default)
    return f"{name} ({curve['head']})" if curve.get("head") else name


def _is_curve(curve: dict) -> bool:
    try:
        sizes = {len(curve[key]) for key in ("thresholds", "accuracy", "specificity")}
        return len(sizes) == 1 and all(isinstance(v, (int, float))
                                       for key in ("accuracy", "specificity")
                                       for v in curve[key])
    except (KeyError, TypeError):
        return False


def curves_png(series: list[tuple[str, dict[str, dict]]], marks=(0.9, 0.95)) -> bytes:
    """Accuracy against specificity, a panel per dataset, a line per checkpoint
    (``series``: its name and {dataset: curve}); each target of ``marks`` dotted on it. The
    names are drawn as written (``figures.new_figure``)."""
    from dsspn_cli.figures import new_figure, png_bytes

    names = []
    for _, curves in series:
        names += [n for n in curves if n not in names]
    columns = min(len(names), 3)
    rows = math.ceil(len(names) / columns)
    figure = new_figure(4.2 * columns, 3.6 * rows + 0.5)
    colours = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
               "#e377c2", "#7f7f7f")
    for k, name in enumerate(names):
        axes = figure.add_subplot(rows, columns, k + 1)
        for i, (label, curves) in enumerate(series):
            curve = curves.get(name)
            if curve is None:
                continue
            colour = colours[i % len(colours)]
            accuracy = [100 * a for a in curve["accuracy"]]
            axes.plot(curve["specificity"], accuracy, color=colour, linewidth=1.4,
                      label=label)
            for target in marks:
                j = operating_index(curve["accuracy"], target)
                if j is not None:
                    axes.plot([curve["specificity"][j]], [accuracy[j]], "o", color=colour,
                              markersize=4)
        for target in marks:
            axes.axhline(100 * target, color="#999999", linewidth=0.6, linestyle="--")
        axes.set_title(name, fontsize=9)
        axes.set_xlabel("specificity (information gain: leaf 1, root 0)", fontsize=8)
        axes.set_ylabel("hierarchical accuracy (%)", fontsize=8)
        axes.set_xlim(-0.02, 1.02)
        axes.tick_params(labelsize=7)
        axes.grid(alpha=0.3)
        if k == 0:
            axes.legend(fontsize=7, loc="lower left")
    figure.suptitle("hedged prediction: accuracy against specificity (dots: accuracy "
                    + ", ".join(f"{t:g}" for t in marks) + ")", fontsize=9)
    figure.tight_layout()
    return png_bytes(figure)


__all__ = ["HedgeCurve", "THRESHOLDS", "TARGETS", "calibration", "calibration_path",
           "calibrated_threshold", "curve_label", "curve_rows", "CURVE_COLUMNS", "curves_png",
           "operating_index", "point", "pooled_curve", "read_curves", "specificity", "file_sha256"]
