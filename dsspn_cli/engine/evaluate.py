"""Evaluation of a dataset of the model's tree, as ``dsspn evaluate`` and validation during
training score it: hierarchical prediction restricted to the dataset's concepts, scored on its
own classes (mean IoU, pixel accuracy, mean class accuracy, per class), and IoU per tree
level; under torchrun sharded over the ranks, the counts summed exactly.

The evaluated classes of a dataset are its labels that map to a concept (Cityscapes: the 19
train classes); other ground truth is not scored, and a prediction outside them counts as a
miss (cityscapesScripts' rule, see metrics.py).

The loop over a dataset's images (``predictions``) and the writing of predictions
(``write_labels``) serve zero-shot evaluation too (``zeroshot.py``); the command's whole work,
datasets, world and report, is ``scoring.py``'s.
"""

from __future__ import annotations

from contextlib import closing

import torch

from dsspn_cli.data.loading import reading
from dsspn_cli.engine.hedging import HedgeCurve
from dsspn_cli.engine.infer import TILE, Inference, LabelledImages, Track, image_loader, no_track
from dsspn_cli.engine.metrics import ConfusionMatrix, all_reduce
from dsspn_cli.errors import UserError
from dsspn_cli.hierarchy.tables import IGNORE


class DatasetClasses:
    """A dataset's evaluated classes: label ids, names, and concept -> class index (a concept
    several labels map to is scored as the first of them, the label predictions write)."""

    def __init__(self, table, dataset: str):
        data = table.dataset(dataset)
        self.label_ids = data.label_ids
        self.names = [data.label_names.get(i, table.concepts[data.label_to_concept[i]])
                      for i in self.label_ids]
        self.concept_to_class = torch.full((len(table.concepts),), IGNORE)
        position = {label_id: k for k, label_id in enumerate(self.label_ids)}
        for concept, label_id in data.concept_label.items():
            self.concept_to_class[concept] = position[label_id]

    def of(self, concepts: torch.Tensor) -> torch.Tensor:
        lut = self.concept_to_class.to(concepts.device)
        return torch.where(concepts >= 0, lut[concepts.clamp(min=0)], IGNORE)


def label_file(dataset, key: str) -> str:
    """Where ``--labels-out DIR`` gets a prediction: ``<dataset>/<key>_labelIds.png`` in DIR
    (the Cityscapes submission format)."""
    return f"{dataset.name}/{key}_labelIds.png"


def write_labels(folder, dataset, index: int, labels: torch.Tensor) -> None:
    """A prediction in the dataset's label ids as PNG (``label_file``); its ignore value
    becomes the set's 'unlabeled' id 0 where that exists (Cityscapes label maps have no
    255)."""
    import io
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from dsspn_cli.files import atomic_write_bytes

    values = labels.cpu().numpy()
    ignore = dataset.labelset.ignore_index
    defined = {label.id for label in dataset.labelset.labels}
    if ignore not in defined and 0 in defined:
        values = np.where(values == ignore, 0, values)
    mode = "L" if values.max(initial=0) < 256 else "I;16"
    buffer = io.BytesIO()
    Image.fromarray(values.astype(np.uint8 if mode == "L" else np.uint16)).save(buffer, "PNG")
    # Nothing below the folder the user named is followed if a link.
    atomic_write_bytes(Path(folder) / label_file(dataset, dataset.samples[index].key),
                       buffer.getvalue(), within=folder)


def predictions(core, dataset, world, indices, infer: Inference, workers: int = 0,
                track: Track = no_track, whole: bool = False):
    """(item, class or concept map) for this rank's share of ``indices`` of ``dataset``
    (``whole``: all that ``infer`` returns), decoded by ``workers`` processes and run
    through ``infer``, with the model in eval mode
    meanwhile; a file that cannot be used stops the loop with its name. Read it inside
    ``contextlib.closing``, so that the loader's workers stop with the loop, also when the
    caller's body raises."""
    mine = indices[world.rank::world.size]
    loader = image_loader(LabelledImages(dataset), mine, workers, world.device)
    was_training = core.training
    core.eval()
    try:
        with reading(loader) as items:
            for item in track(items, len(mine), f"evaluating {dataset.name}"):
                if "error" in item:
                    raise UserError(item["error"])
                if "bad" in item:
                    raise UserError(f"{item['bad']}; run 'dsspn data check {dataset.root} "
                                    f"--format {dataset.format.name}' for every such file")
                found = infer(item["image"])
                yield item, found if whole else found[0][None]
    finally:
        core.train(was_training)


@torch.no_grad()
def evaluate(model, dataset, world=None, *, indices=None, track: Track = no_track,
             labels_out=None, tile: int = TILE, precision: str = "fp32",
             workers: int = 0, hedge: bool = False) -> dict:
    """Scores of ``model`` (a Segmenter, or its DistributedDataParallel wrapper) on the
    images ``indices`` (default: all) of a SegmentationDataset, through the inference path
    prediction uses (``infer.Inference``: ``tile``, ``precision``; ``workers`` decoding).

    ``world``: under torchrun each rank scores its share of the images and the counts are
    summed exactly over the ranks (one all-reduce of integers per dataset, which every rank
    calls, also one left without images), so every rank returns the scores of all of them.
    ``labels_out``: a folder for each prediction as a PNG of the dataset's label ids, named
    ``<dataset>/<key>_labelIds.png`` (``label_file``; the Cityscapes submission format); each
    rank writes its own. ``hedge``: also the accuracy-specificity curve of hedged
    prediction (``hedging.HedgeCurve``) under ``"hedging"``, from the same forward pass:
    the model's ``levels``, whose deepest level is the prediction scored above."""
    from dsspn_cli.engine.world import World

    core = getattr(model, "module", model)
    world = world or World(device=next(core.parameters()).device)
    device = world.device
    table = core.masking.table
    classes = DatasetClasses(table, dataset.name)
    matrix = ConfusionMatrix(len(classes.label_ids), device)
    levels = core.masking.concept_at_level
    depth = levels.shape[1]
    level_matrices = [ConfusionMatrix(len(table.concepts), device) for _ in range(depth)]
    indices = list(range(len(dataset)) if indices is None else indices)
    infer = Inference(core, dataset.name, None, tile, precision, device, levels=hedge)
    curve = HedgeCurve(core.masking, dataset.name, device) if hedge else None
    with closing(predictions(core, dataset, world, indices, infer, workers, track,
                             whole=hedge)) as scored:
        for item, concepts in scored:
            target = item["target"][None].to(device, non_blocking=True)
            if curve is not None:
                path, confidence = concepts
                curve.update(path, confidence, target[0])
                concepts = path[-1][None]
            matrix.update(classes.of(concepts), classes.of(target))
            if labels_out is not None:
                write_labels(labels_out, dataset, item["index"], core.concepts_to_labels(
                    concepts, dataset.name)[0])
            valid = target >= 0
            for level in range(depth):
                cut_truth = torch.where(valid, levels[target.clamp(min=0), level], IGNORE)
                level_matrices[level].update(levels[concepts, level], cut_truth)
    all_reduce([matrix] + level_matrices + ([curve] if curve is not None else []), world)
    scores = matrix.scores(classes.names)
    per_level = {}
    for level, level_matrix in enumerate(level_matrices):
        present = level_matrix.matrix.sum(1) > 0
        if bool(present.any()):
            per_level[str(level)] = level_matrix.scores()["mIoU"]
    scores["iou_per_level"] = per_level
    scores["images"] = len(indices)
    if curve is not None:
        scores["hedging"] = curve.to_json()
    return scores
