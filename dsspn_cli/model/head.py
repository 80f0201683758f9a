"""The DSSPN head: a semantic neuron graph built from the concept tree (paper section 3).

Training runs the dynamic structure: each image activates the neurons on the paths from the
root to the concepts in its label map, and each neuron runs once, on exactly the images that
need it, stacked (dynamic batching, paper 3.5). ``per_image`` runs the same sub-graphs one
image at a time (the slow way the paper improves on); ``fixed`` runs every neuron the dataset
uses on every image ('DSSPN fixed'). All three give the same loss.

A neuron reads the hidden features of its ancestors, root first (``ancestors: all``, the dense
block), or only its parent's (``parent``, the paper's ablation), concatenated (``combine:
concat``) or summed (``sum``). Ancestor features: with ``storage="concat"`` each neuron keeps
its own concatenated copy for backward, so memory grows with depth squared; with
``storage="shared"`` (default) the concatenation is built in a transient buffer and the block
recomputed during backward (``torch.utils.checkpoint``, as torchvision's memory-efficient
DenseNet does), so only each neuron's own c channels are stored.

Inference is hierarchical: every pixel starts at the root and follows its best child down to
a leaf, or, for a target dataset, to a concept that dataset defines (``descend``, one step per
neuron); neurons no pixel reaches are not run, unless ``static`` asks for a graph without
data-dependent control flow (export). Without a target dataset a pixel chooses only among the
children that one of the model's training datasets defines: no prediction lands on a concept
nothing trained.
"""

from __future__ import annotations

from itertools import accumulate

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from dsspn_cli.hierarchy.tables import IGNORE
from dsspn_cli.model.config import HeadConfig
from dsspn_cli.model.grid import FeatureGrid
from dsspn_cli.model.losses import neuron_loss
from dsspn_cli.model.masking import MaskingTensors
from dsspn_cli.model.neuron import SemanticNeuron, Transition

MODES = ("dynamic", "per_image", "fixed")


def descend(current: torch.Tensor, confidence: torch.Tensor, scores: torch.Tensor,
            concept: int, children: torch.Tensor, can_stop: bool, threshold: float = 0.5):
    """One neuron's step of hierarchical inference: the pixels at ``concept`` move to their
    best-scoring child (``scores``: B x J x H x W; ``children``: its J concept ids), unless
    ``can_stop`` and no child reaches ``threshold`` ('none of them'). Confidence is the
    product of the scores along the path. No data-dependent control flow."""
    best, index = scores.max(1)
    move = current == concept
    if can_stop:
        move = move & (best >= threshold)
    return (torch.where(move, children[index], current),
            torch.where(move, confidence * best, confidence))


class DSSPNHead(nn.Module):
    def __init__(self, table, in_channels: int, config: HeadConfig = HeadConfig(),
                 datasets: list[str] | None = None):
        super().__init__()
        self.config = config
        self.masking = MaskingTensors(table)
        # The children some training dataset defines (default: every dataset of the tree).
        used = [self.masking.dataset_index(name) for name in datasets or self.masking.names]
        self.register_buffer("trained_children", self.masking.child_mask[used].any(0), False)
        self.transition = Transition(in_channels, config.root_width, config.transition_rates)
        # Neuron k's inputs among the neurons, root first (-1 stands for the root features).
        self.inputs: list[list[int]] = []
        for chain in self.masking.neuron_ancestors:
            sources = [-1] + chain
            self.inputs.append(sources if config.ancestors == "all" else sources[-1:])
        self.neurons = nn.ModuleList(
            SemanticNeuron(self._width(sources), len(table.neuron_children[k]), config,
                           in_channels)
            for k, sources in enumerate(self.inputs))

    def _width(self, sources: list[int]) -> int:
        if self.config.combine == "sum":
            return self.config.hidden
        return sum(self.config.root_width if s < 0 else self.config.hidden for s in sources)

    def _combine(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        if self.config.combine == "sum":
            return torch.stack(tensors).sum(0)
        return torch.cat(tensors, 1)

    # ---------------------------------------------------------------------------- training

    def forward(self, features: torch.Tensor, target: torch.Tensor, dataset: str,
                mode: str | None = None, normaliser: float | None = None) -> torch.Tensor:
        """The training loss of a batch from one dataset.

        ``target``: B x h x w concept ids at the feature resolution (-1 ignore). The loss is
        summed over pixels and neurons, divided by ``normaliser`` (default: the number of
        labelled pixels), so it does not depend on how the batch is executed. ``mode``
        (default: the config's ``structure``) is dynamic, per_image or fixed.
        """
        mode = mode or self.config.structure
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        d = self.masking.dataset_index(dataset)
        if normaliser is None:
            normaliser = (target >= 0).sum().clamp(min=1)
        root = self.transition(features)
        active = self.masking.active_neurons(target, d, mode == "fixed",
                                             self.config.exclusive_negatives)
        if mode == "per_image":
            total = sum(self._run(features[b:b + 1], root[b:b + 1], target[b:b + 1],
                                  active[b:b + 1], d)
                        for b in range(root.shape[0]))
        else:
            total = self._run(features, root, target, active, d)
        return total / normaliser

    def _run(self, features, root, target, active, d) -> torch.Tensor:
        """Every active neuron once, on the images that activate it (rows of the batch)."""
        every = torch.arange(root.shape[0], device=root.device)
        outputs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {-1: (every, root)}
        # Zero, but attached to the graph: a batch without labelled pixels still backpropagates.
        total = root.sum() * 0
        # Each neuron's rows, sorted, with one wait on the device for the whole batch.
        pairs = active.t().nonzero()
        per_neuron = torch.bincount(pairs[:, 0], minlength=active.shape[1]).tolist()
        rows_of = pairs[:, 1].split(per_neuron)
        direct = self._direct([k for k, n in enumerate(per_neuron) if n], features)
        for k, neuron in enumerate(self.neurons):          # concept order: parents first
            rows = rows_of[k]
            if per_neuron[k] == 0:
                continue
            hidden = self._hidden(neuron, rows, [outputs[s] for s in self.inputs[k]])
            outputs[k] = (rows, hidden)
            counts, child = self.masking.neuron_targets(target[rows], k, d,
                                                        self.config.exclusive_negatives)
            skip = direct.get(k)
            if skip is not None and per_neuron[k] < features.shape[0]:
                skip = skip.index_select(0, rows)
            logits = neuron.read(hidden, skip)
            total = total + neuron_loss(logits, counts, child, self.masking.child_mask[d, k],
                                        self.config.loss)
        return total

    def _direct(self, neurons: list[int], features) -> dict:
        """The skip readout of the active ``neurons`` on the whole batch, as one convolution
        with their weights stacked: backward then computes one gradient of the backbone
        features (B x 2048 x h x w for ResNet-101), not one per neuron. Each neuron selects
        its images' rows from it: a copy of the selected backbone features, kept for
        backward by every neuron, would cost far more than the maps of images that do not
        need them."""
        if self.config.readout != "skip" or not neurons:
            return {}
        weights = [self.neurons[k].direct.weight for k in neurons]
        maps = nn.functional.conv2d(features, torch.cat(weights),
                                    padding=self.config.predict_kernel // 2)
        return dict(zip(neurons, maps.split([w.shape[0] for w in weights], 1)))

    def _hidden(self, neuron: SemanticNeuron, rows, sources) -> torch.Tensor:
        tensors = [t for _, t in sources]
        positions = [torch.searchsorted(have, rows) for have, _ in sources]

        def block(*inputs):
            gathered = [t.index_select(0, p) for t, p in zip(inputs, positions)]
            return neuron(self._combine(gathered))

        # Batch norm would update its running statistics again in the recomputation.
        if self.config.storage == "shared" and self.config.norm != "batch" and \
                torch.is_grad_enabled():
            # Keep only the block's inputs (the ancestors' outputs, stored once each) and its
            # c-channel output; the combined input and bottleneck are rebuilt in backward.
            return checkpoint(block, *tensors, use_reentrant=False)
        return block(*tensors)

    # ---------------------------------------------------------------------------- inference

    @torch.no_grad()
    def predict(self, features: torch.Tensor, size: tuple[int, int] | None = None,
                dataset: str | None = None, level: int | None = None,
                threshold: float = 0.5, static: bool = False, stride: int | None = None,
                classes: tuple[int, ...] | None = None):
        """Concept map and per-pixel confidence (B x H x W), H x W = ``size`` (default the
        feature size). Each pixel descends from the root to its best child until a leaf, a
        concept the dataset defines with no defined child, a concept it labels whose children
        all score below ``threshold`` (BCE: 'none of them'), or depth ``level``; the child
        scores at a pixel are the neuron's upsampled maps there (``grid.FeatureGrid``).

        The descent is decided on the feature cells, and only the pixels whose four cells
        disagree are descended on their own: where the four cells a pixel interpolates
        between take one path, so does the pixel (a sum of logits with positive weights keeps
        their order and their sign), so the result equals the descent of every pixel, which
        ``static`` (for export: no data-dependent control flow) and the softmax loss run.

        ``classes`` (concept ids): only the neurons above them run, and a pixel ends at the
        concept where its path leaves them (``MaskingTensors.vocabulary`` reads it)."""
        softmax = self.config.loss == "softmax"
        root = self.transition(features)
        grid = FeatureGrid(root.shape[-2:], size or root.shape[-2:], stride, root.device)
        plan = self.masking.descent(dataset, level, softmax, classes)
        d = None if dataset is None else self.masking.dataset_index(dataset)
        hidden: dict = {-1: root, FEATURES: features}
        if static or softmax:
            return self._descend_pixels(grid, plan, d, threshold, hidden, skip=not static)
        return self._descend_cells(grid, plan, d, threshold, hidden)

    def _logits(self, k: int, hidden: dict) -> torch.Tensor:
        """Neuron k's child logits at feature resolution (its hidden features kept for its
        descendants), in float32 whatever the autocast dtype. ``hidden`` holds the features
        computed so far: the root's (-1), the neurons' and the backbone's (``FEATURES``)."""
        neuron = self.neurons[k]
        hidden[k] = neuron(self._combine([hidden[s] for s in self.inputs[k]]))
        direct = None if neuron.direct is None else neuron.direct(hidden[FEATURES])
        return neuron.read(hidden[k], direct).float()

    def _scores(self, logits: torch.Tensor, step, d) -> torch.Tensor:
        """Child scores (children on dim 1); children the dataset does not define (without a
        dataset: that no training dataset defines) score -1."""
        scores = logits.softmax(1) if self.config.loss == "softmax" else torch.sigmoid(logits)
        if d is None:
            allowed = self.trained_children[step.neuron, :step.children]
        else:
            allowed = self.masking.child_mask[d, step.neuron, :step.children]
        shape = [1] * scores.dim()
        shape[1] = -1
        return scores.masked_fill(~allowed.view(shape), -1.0)

    def _descend_pixels(self, grid: FeatureGrid, plan, d, threshold, hidden, skip: bool):
        """Every pixel on its own, at full resolution."""
        masking = self.masking
        root = hidden[-1]
        current = torch.full((root.shape[0], *grid.size), masking.table.neuron_concept[0],
                             dtype=torch.long, device=root.device)
        confidence = torch.ones(current.shape, device=root.device)
        for step in plan:
            # Pixels only move down, parents run first: nobody here means nobody below.
            if skip and not bool((current == step.concept).any()):
                continue
            scores = self._scores(grid.upsample(self._logits(step.neuron, hidden)), step, d)
            current, confidence = descend(current, confidence, scores, step.concept,
                                          masking.neuron_children[step.neuron, :step.children],
                                          step.can_stop, threshold)
        return current, confidence

    def _descend_cells(self, grid: FeatureGrid, plan, d, threshold, hidden):
        """The descent on the feature cells, read at the pixels where the four cells around
        agree, and on its own at the others; one wait on the device per depth and phase."""
        masking = self.masking
        root = hidden[-1]
        cells = torch.full(root.shape[:1] + root.shape[2:], masking.table.neuron_concept[0],
                           dtype=torch.long, device=root.device)
        unit = torch.ones(cells.shape, device=root.device)
        logits: dict[int, torch.Tensor] = {}
        chosen = []      # per depth: the logit of the child each cell took (SURE: none)
        for steps in _by_depth(plan):
            present = _counts(cells, len(masking.table.concepts))
            taken = torch.full(cells.shape, SURE, device=root.device)
            for step in steps:
                if not present[step.concept]:
                    continue
                k = step.neuron
                logits[k] = self._logits(k, hidden)
                scores = self._scores(logits[k], step, d)
                before = cells
                cells, _ = descend(cells, unit, scores, step.concept,
                                   masking.neuron_children[k, :step.children], step.can_stop,
                                   threshold)
                best = logits[k].masked_fill(scores < 0, float("-inf")).max(1).values
                taken = torch.where(cells != before, best, taken)
            chosen.append(taken)
        concepts = grid.agreed(cells)
        confidence = torch.ones(concepts.shape, device=root.device)
        for taken in chosen:
            confidence = confidence * torch.sigmoid(grid.upsample(taken))
        image, y, x = (concepts < 0).nonzero(as_tuple=True)
        if image.numel():
            concept, score = self._descend_points(grid, plan, d, threshold, hidden, logits,
                                                  image, y, x)
            concepts[image, y, x] = concept
            confidence[image, y, x] = score
        return concepts, confidence

    def _descend_points(self, grid, plan, d, threshold, hidden, logits, image, y, x):
        """The descent of single pixels, each with its neurons' upsampled logits; a neuron
        no cell reached is run now. Per depth the pixels are grouped by the concept they
        are at (one wait on the device), so each neuron reads only the pixels at its
        concept: a pixel costs the neurons on its path, not every neuron some pixel
        reached."""
        masking = self.masking
        count = len(masking.table.concepts)
        current = torch.full(image.shape, masking.table.neuron_concept[0], dtype=torch.long,
                             device=image.device)
        confidence = torch.ones(image.shape, device=image.device)
        for steps in _by_depth(plan):
            order = torch.argsort(current)
            sizes = _counts(current, count)
            starts = [0, *accumulate(sizes)]
            for step in steps:
                size = sizes[step.concept]
                if not size:
                    continue
                k = step.neuron
                if k not in logits:
                    logits[k] = self._logits(k, hidden)
                at = order[starts[step.concept]:starts[step.concept] + size]
                scores = self._scores(grid.at(logits[k], image[at], y[at], x[at]), step, d)
                # Every pixel here is at the step's concept; the steps of one depth hold
                # disjoint pixels, so each writes its own.
                current[at], confidence[at] = descend(
                    current[at], confidence[at], scores, step.concept,
                    masking.neuron_children[k, :step.children], step.can_stop, threshold)
        return current, confidence


FEATURES = "backbone"   # the key of the backbone features among the features of a descent
SURE = 1e4          # a logit whose sigmoid is 1.0: 'no step here' multiplies nothing


def _by_depth(plan) -> list[list]:
    levels: dict[int, list] = {}
    for step in plan:
        levels.setdefault(step.depth, []).append(step)
    return [levels[depth] for depth in sorted(levels)]


def _counts(concepts: torch.Tensor, count: int) -> list[int]:
    """How many entries of ``concepts`` hold each concept (one wait on the device)."""
    return torch.bincount(concepts.flatten(), minlength=count).tolist()


__all__ = ["DSSPNHead", "MODES", "descend", "IGNORE"]
