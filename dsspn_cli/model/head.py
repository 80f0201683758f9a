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

from itertools import accumulate, groupby

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from dsspn_cli.hierarchy.tables import IGNORE
from dsspn_cli.model.config import HeadConfig
from dsspn_cli.model.grid import FeatureGrid
from dsspn_cli.model.losses import neuron_loss
from dsspn_cli.model.masking import MaskingTensors
from dsspn_cli.model.neuron import SemanticNeuron, Transition
from dsspn_cli.model.syncs import on_host

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
        if normaliser is None:
            normaliser = (target >= 0).sum().clamp(min=1)
        root = self.transition(features)
        return self.neuron_losses(features, root, target, dataset, mode) / normaliser

    def neuron_losses(self, features: torch.Tensor, root: torch.Tensor, target: torch.Tensor,
                      dataset: str, mode: str | None = None) -> torch.Tensor:
        """The neurons' part of ``forward``, from the root features: their losses summed.
        The part where the modes differ (the benchmark times it alone)."""
        mode = mode or self.config.structure
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        d = self.masking.dataset_index(dataset)
        active = self.masking.active_neurons(target, d, mode == "fixed",
                                             self.config.exclusive_negatives)
        if mode == "per_image":
            return sum(self._run(features[b:b + 1], root[b:b + 1], target[b:b + 1],
                                 active[b:b + 1], d)
                       for b in range(root.shape[0]))
        return self._run(features, root, target, active, d)

    def _run(self, features, root, target, active, d) -> torch.Tensor:
        """Every active neuron once, on the images that activate it (rows of the batch)."""
        every = torch.arange(root.shape[0], device=root.device)
        outputs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {-1: (every, root)}
        # Zero, but attached to the graph: a batch without labelled pixels still backpropagates.
        total = root.sum() * 0
        # Each neuron's images (rows of the batch), read on the host: one wait on the device
        # per step; their indices go back without one.
        images = [[b for b, on in enumerate(row) if on] for row in on_host(active.t())]
        index = torch.tensor([b for rows in images for b in rows], dtype=torch.long)
        rows_of = index.to(root.device, non_blocking=True).split([len(r) for r in images])
        direct = self._direct(features, images)
        for k, neuron in enumerate(self.neurons):          # concept order: parents first
            rows = rows_of[k]
            if not images[k]:
                continue
            hidden = self._hidden(neuron, rows, [outputs[s] for s in self.inputs[k]])
            outputs[k] = (rows, hidden)
            counts, child = self.masking.neuron_targets(target[rows], k, d,
                                                        self.config.exclusive_negatives)
            logits = neuron.read(hidden, direct.get(k))
            total = total + neuron_loss(logits, counts, child, self.masking.child_mask[d, k],
                                        self.config.loss)
        return total

    def _direct(self, features, images: list[list[int]]) -> dict[int, torch.Tensor]:
        """The skip readout of each active neuron on its images, rows in batch order.

        The neurons are batched, not the images: consecutive images that activate the same
        neurons are one convolution of their backbone features (a view, not a copy) with
        those neurons' weights stacked, so the wide features are read once per run of
        images and not once per neuron (``fixed``: one convolution for the batch). One
        convolution of every active neuron over the whole batch would compute maps for
        images that do not need them (slower, see the README's performance notes); a copy
        of each neuron's images' features kept for backward would cost far more memory."""
        if self.config.readout != "skip":
            return {}
        by_image: list[list[int]] = [[] for _ in range(features.shape[0])]
        for k, rows in enumerate(images):                  # each image's neurons, sorted
            for image in rows:
                by_image[image].append(k)
        runs = [(neurons, len(list(run))) for neurons, run in groupby(by_image)]
        parts: dict[int, list[torch.Tensor]] = {}
        # One split, so that backward assembles the features' gradient once.
        for (neurons, _), run in zip(runs, features.split([n for _, n in runs])):
            for k, maps in zip(neurons, self._stacked_direct(neurons, run)):
                parts.setdefault(k, []).append(maps)
        return {k: maps[0] if len(maps) == 1 else torch.cat(maps) for k, maps in parts.items()}

    def _stacked_direct(self, neurons: list[int], features) -> list:
        """The skip readouts of ``neurons`` on ``features``, as one convolution with their
        weights stacked (None each with the paper's readout)."""
        if self.config.readout != "skip" or not neurons:
            return [None] * len(neurons)
        weights = [self.neurons[k].direct.weight for k in neurons]
        maps = nn.functional.conv2d(features, torch.cat(weights),
                                    padding=self.config.predict_kernel // 2)
        return list(maps.split([w.shape[0] for w in weights], 1))

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

    def _logits(self, neurons: list[int], hidden: dict, logits: dict) -> None:
        """The child logits of ``neurons`` (of one depth) at feature resolution, in float32
        whatever the autocast dtype, into ``logits``; their hidden features are kept in
        ``hidden`` (the root's at -1, the backbone's at ``FEATURES``) for their descendants.

        Batched where it pays: their skip readouts are one convolution (the backbone
        features, 2048 channels for ResNet-101, read once per depth, not once per neuron),
        and siblings, which read the same ancestors, combine them once. Their blocks run one
        by one: stacked, or as a grouped convolution, they were slower on the CPU."""
        combined: dict[tuple[int, ...], torch.Tensor] = {}
        direct = self._stacked_direct(neurons, hidden[FEATURES])
        for k, skip in zip(neurons, direct):
            sources = tuple(self.inputs[k])
            if sources not in combined:
                combined[sources] = self._combine([hidden[s] for s in sources])
            neuron = self.neurons[k]
            hidden[k] = neuron(combined[sources])
            logits[k] = neuron.read(hidden[k], skip).float()

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
        for steps in _by_depth(plan):
            logits: dict[int, torch.Tensor] = {}          # this depth's, used once
            if skip:
                # Pixels only move down, parents run first: nobody here means nobody below.
                present = _counts(current, len(masking.table.concepts))
                steps = [step for step in steps if present[step.concept]]
            self._logits([step.neuron for step in steps], hidden, logits)
            for step in steps:
                scores = self._scores(grid.upsample(logits[step.neuron]), step, d)
                current, confidence = descend(
                    current, confidence, scores, step.concept,
                    masking.neuron_children[step.neuron, :step.children], step.can_stop,
                    threshold)
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
            steps = [step for step in steps if present[step.concept]]
            self._logits([step.neuron for step in steps], hidden, logits)
            taken = torch.full(cells.shape, SURE, device=root.device)
            for step in steps:
                k = step.neuron
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
            steps = [step for step in steps if sizes[step.concept]]
            self._logits([s.neuron for s in steps if s.neuron not in logits], hidden, logits)
            for step in steps:
                size = sizes[step.concept]
                k = step.neuron
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
    return on_host(torch.bincount(concepts.flatten(), minlength=count))


__all__ = ["DSSPNHead", "MODES", "descend", "IGNORE"]
