"""Zero-shot evaluation: a model scored on a dataset whose label set it never trained on (MSeg's
held-out test sets, a ``folder`` dataset's own labels, any label set given), in the dataset's
own classes, on its untouched ground truth.

The classes are mapped onto the model's tree (``hierarchy.vocabulary.map_vocabulary``, not
strict) and the model predicts in them (``Query.classes``: each pixel one of the classes it
can name, or none of them). The rules, in the order they apply:

- **Everything else.** A label marked ``other: true`` (VOC's and Pascal Context 60's
  background) is not mapped: it takes every pixel predicted as none of the other classes,
  as MSeg scores it (every universal class that no other test class takes). Without one, such
  a pixel is a miss for its true class and a false positive for none.
- **Cannot name.** A class that maps to no concept is never predicted.
- **Cannot tell apart.** Where classes claim the same concept, its pixels go to the first of
  them in label order (as a trained dataset's labels on one concept are scored); a class
  whose concepts all went to finer classes is never predicted.
- **Headline.** mIoU counts each class the model cannot name or tell apart as 0, whether or
  not the images hold it, and every other class by the benchmarks' rule (left out where it
  has neither ground truth nor predictions): nothing is hidden. ``mIoU_named`` is the mean
  over the classes it can name; pixel and mean class accuracy are as measured.
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass

import torch

from dsspn_cli.engine.evaluate import predictions, write_labels
from dsspn_cli.engine.infer import TILE, Inference, Track, no_track
from dsspn_cli.engine.metrics import ConfusionMatrix, all_reduce, percent
from dsspn_cli.hierarchy.tables import IGNORE


@dataclass(frozen=True)
class HeldOutClass:
    """One evaluated class of a held-out label set, as the model predicts it."""

    name: str                      # the key in the scores: the label's name (with its id
                                   # where two labels share a name)
    label_id: int
    how: str                       # same | below | coarser | none, or other (everything else)
    concepts: tuple[str, ...]      # the concepts predicted as this class (tree names)
    problem: str | None = None     # unnamed | shared: counted 0 in the headline


class HeldOutClasses:
    """A label set's evaluated classes mapped onto a model's tree: the vocabulary the model
    predicts in (``query``), and the look-ups from label ids and predictions to the classes
    scored."""

    def __init__(self, tree, labelset, wn=None):
        from dsspn_cli.hierarchy.vocabulary import everything_else, map_labelset

        labels = labelset.mapped_labels
        other = everything_else(labelset)
        vocabulary = map_labelset(tree, labelset, wn, strict=False, without_other=True)
        self.labelset = labelset
        self.problems = vocabulary.problems
        flagged: dict[str, str] = {}
        left_nothing: set[str] = set()     # classes whose concepts all went to finer ones
        for problem in vocabulary.problems:
            for name in problem.classes:
                flagged.setdefault(name, problem.kind)
            if problem.kind == "shared" and len(problem.classes) == 1:
                left_nothing.add(problem.classes[0])
        keys = _keys(labels)
        mappings = iter(vocabulary.classes)
        owned: set[str] = set()
        self.classes: list[HeldOutClass] = []
        for label, key in zip(labels, keys):
            if label is other:
                self.classes.append(HeldOutClass(key, label.id, "other", ()))
                continue
            mapping = next(mappings)
            problem = flagged.get(mapping.name)
            concepts = () if mapping.name in left_nothing else tuple(
                c for c in mapping.ordered(tree) if c not in owned)
            owned.update(concepts)
            self.classes.append(HeldOutClass(key, label.id, mapping.how, concepts, problem))
        self.other = next((k for k, label in enumerate(labels) if label is other), None)
        predicted = [k for k, c in enumerate(self.classes) if c.concepts]
        # What the model is asked for, and which class each of its answers is.
        self.query = tuple(frozenset(tree.id(c) for c in self.classes[k].concepts)
                           for k in predicted)
        none = IGNORE if self.other is None else self.other
        self._from_query = torch.tensor(predicted + [none], dtype=torch.long)
        self._from_label = torch.full((max(labelset.max_id + 1, 256),), IGNORE,
                                      dtype=torch.long)
        for k, label in enumerate(labels):
            self._from_label[label.id] = k
        none_id = labelset.ignore_index if other is None else other.id
        self._label_ids = torch.tensor([label.id for label in labels] + [none_id],
                                       dtype=torch.long)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    def truth(self, label_ids: torch.Tensor) -> torch.Tensor:
        """Label ids (-1 ignored) -> class indices (-1: not evaluated)."""
        lut = self._from_label.to(label_ids.device)
        return torch.where(label_ids >= 0, lut[label_ids.clamp(min=0)], IGNORE)

    def predicted(self, answer: torch.Tensor) -> torch.Tensor:
        """The model's answer (an index into ``query``, -1 none of them) -> class indices;
        none of them is the everything-else class, or -1 (no class) without one."""
        lut = self._from_query.to(answer.device)
        return torch.where(answer >= 0, lut[answer.clamp(min=0)], lut[-1])

    def label_ids(self, classes: torch.Tensor) -> torch.Tensor:
        """Class indices -> the label set's ids (-1: the everything-else class's id, or the
        ignore value), as ``--labels-out`` writes them."""
        lut = self._label_ids.to(classes.device)
        return torch.where(classes >= 0, lut[classes.clamp(min=0)], lut[-1])

    def scores(self, matrix: ConfusionMatrix) -> dict:
        """The dataset's scores (the JSON's): the headline mIoU with the classes the model
        cannot name or tell apart as 0, the mIoU over the others, accuracies as measured,
        and per class how it was named."""
        scores = matrix.scores(self.names)
        iou = matrix.iou()
        cannot = torch.tensor([c.problem is not None for c in self.classes], dtype=torch.bool,
                              device=iou.device)
        counted = torch.where(cannot, torch.zeros_like(iou), iou)
        named = iou[~cannot]
        for cls in self.classes:
            scores["per_class"][cls.name].update(
                how=cls.how, concepts=list(cls.concepts), problem=cls.problem)
        return {
            "mIoU": _mean(counted),
            "mIoU_named": _mean(named),
            "pixel_acc": scores["pixel_acc"],
            "mean_acc": scores["mean_acc"],
            "per_class": scores["per_class"],
            "zero_shot": True,
            "labelset": str(self.labelset.source),
            "everything_else": None if self.other is None else self.names[self.other],
            "unnamed": [c.name for c in self.classes if c.problem == "unnamed"],
            "shared": [c.name for c in self.classes if c.problem == "shared"],
            "problems": [p.to_json() for p in self.problems],
            "iou_per_level": {},
        }


def _mean(values: torch.Tensor):
    """The mean of the defined values, as a percentage; None when none is."""
    defined = values[~values.isnan()]
    return percent(defined.mean()) if defined.numel() else None


def _keys(labels) -> list[str]:
    """A name per label for the scores: its own, with its id where two labels share it."""
    counts: dict[str, int] = {}
    for label in labels:
        counts[label.name] = counts.get(label.name, 0) + 1
    return [label.name if counts[label.name] == 1 else f"{label.name} (id {label.id})"
            for label in labels]


@torch.no_grad()
def evaluate_zero_shot(model, dataset, classes: HeldOutClasses, world=None, *,
                       indices=None, track: Track = no_track, labels_out=None,
                       tile: int = TILE, precision: str = "fp32", workers: int = 0) -> dict:
    """Scores of ``model`` on a SegmentationDataset read in its label set's own ids (made
    with ``table=None``), in ``classes``; sharded over the ranks of ``world`` and summed
    exactly as ``evaluate.evaluate`` is. ``labels_out``: each prediction in the label set's
    ids, as ``evaluate`` writes them."""
    from dsspn_cli.engine.world import World

    core = getattr(model, "module", model)
    world = world or World(device=next(core.parameters()).device)
    device = world.device
    matrix = ConfusionMatrix(len(classes.classes), device)
    indices = list(range(len(dataset)) if indices is None else indices)
    if classes.query:
        infer = Inference(core, None, None, tile, precision, device, classes=classes.query)
    else:
        # Not one class the model can name: every pixel is none of them.
        def infer(image):
            return (torch.full(image.shape[:2], -1, dtype=torch.long, device=device),)
    with closing(predictions(core, dataset, world, indices, infer, workers, track)) as scored:
        for item, answer in scored:
            guess = classes.predicted(answer)
            matrix.update(guess, classes.truth(item["target"][None].to(device)))
            if labels_out is not None:
                write_labels(labels_out, dataset, item["index"], classes.label_ids(guess)[0])
    all_reduce([matrix], world)
    scores = classes.scores(matrix)
    scores["images"] = len(indices)
    return scores


__all__ = ["HeldOutClass", "HeldOutClasses", "evaluate_zero_shot"]
