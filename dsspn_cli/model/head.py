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

Inference is hierarchical, a pixel following its best child from the root down: the descent
is ``descent.py``'s; the head computes the child scores of the neurons it asks for.
"""

from __future__ import annotations

from itertools import groupby

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from dsspn_cli.model.config import DSSPNSettings
from dsspn_cli.model.contract import Head, Query
from dsspn_cli.model.descent import FEATURES, Descent
from dsspn_cli.model.losses import neuron_loss
from dsspn_cli.model.neuron import SemanticNeuron, Transition
from dsspn_cli.model.syncs import on_host

MODES = ("dynamic", "per_image", "fixed")


class DSSPNHead(Head):
    """The semantic neuron graph (``contract.Head``); its settings are ``DSSPNSettings``."""

    Settings = DSSPNSettings

    def __init__(self, table, in_channels: int, settings: DSSPNSettings | None = None,
                 datasets: list[str] | None = None):
        super().__init__(table, in_channels, settings, datasets)
        settings = self.settings
        # The children some training dataset defines (default: every dataset of the tree).
        used = [self.masking.dataset_index(name) for name in datasets or self.masking.names]
        self.register_buffer("trained_children", self.masking.child_mask[used].any(0), False)
        self.transition = Transition(in_channels, settings.root_width, settings.transition_rates)
        # Neuron k's inputs among the neurons, root first (-1 stands for the root features).
        self.inputs: list[list[int]] = []
        for chain in self.masking.neuron_ancestors:
            sources = [-1] + chain
            self.inputs.append(sources if settings.ancestors == "all" else sources[-1:])
        self.neurons = nn.ModuleList(
            SemanticNeuron(self._width(sources), len(table.neuron_children[k]), settings,
                           in_channels)
            for k, sources in enumerate(self.inputs))

    def _width(self, sources: list[int]) -> int:
        if self.settings.combine == "sum":
            return self.settings.hidden
        return sum(self.settings.root_width if s < 0 else self.settings.hidden for s in sources)

    def _combine(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        if self.settings.combine == "sum":
            return torch.stack(tensors).sum(0)
        return torch.cat(tensors, 1)

    # ---------------------------------------------------------------------------- training

    def forward(self, features: torch.Tensor, target: torch.Tensor, dataset: str,
                mode: str | None = None, normaliser: float | None = None) -> torch.Tensor:
        """The training loss of a batch from one dataset.

        ``target``: B x h x w concept ids at the feature resolution (-1 ignore). The loss is
        summed over pixels and neurons, divided by ``normaliser`` (default: the number of
        labelled pixels), so it does not depend on how the batch is executed. ``mode``
        (default: the settings' ``structure``) is dynamic, per_image or fixed.
        """
        if normaliser is None:
            normaliser = (target >= 0).sum().clamp(min=1)
        root = self.transition(features)
        return self.neuron_losses(features, root, target, dataset, mode) / normaliser

    def neuron_losses(self, features: torch.Tensor, root: torch.Tensor, target: torch.Tensor,
                      dataset: str, mode: str | None = None) -> torch.Tensor:
        """The neurons' part of ``forward``, from the root features: their losses summed.
        The part where the modes differ (the benchmark times it alone)."""
        mode = mode or self.settings.structure
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        d = self.masking.dataset_index(dataset)
        active = self.masking.active_neurons(target, d, mode == "fixed",
                                             self.settings.exclusive_negatives)
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
                                                        self.settings.exclusive_negatives)
            logits = neuron.read(hidden, direct.get(k))
            total = total + neuron_loss(logits, counts, child, self.masking.child_mask[d, k],
                                        self.settings.loss)
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
        if self.settings.readout != "skip":
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
        if self.settings.readout != "skip" or not neurons:
            return [None] * len(neurons)
        weights = [self.neurons[k].direct.weight for k in neurons]
        maps = nn.functional.conv2d(features, torch.cat(weights),
                                    padding=self.settings.predict_kernel // 2)
        return list(maps.split([w.shape[0] for w in weights], 1))

    def _hidden(self, neuron: SemanticNeuron, rows, sources) -> torch.Tensor:
        tensors = [t for _, t in sources]
        positions = [torch.searchsorted(have, rows) for have, _ in sources]

        def block(*inputs):
            gathered = [t.index_select(0, p) for t, p in zip(inputs, positions)]
            return neuron(self._combine(gathered))

        # Batch norm would update its running statistics again in the recomputation.
        if self.settings.storage == "shared" and self.settings.norm != "batch" and \
                torch.is_grad_enabled():
            # Keep only the block's inputs (the ancestors' outputs, stored once each) and its
            # c-channel output; the combined input and bottleneck are rebuilt in backward.
            return checkpoint(block, *tensors, use_reentrant=False)
        return block(*tensors)

    # ---------------------------------------------------------------------------- inference

    @torch.no_grad()
    def predict(self, features: torch.Tensor, query: Query = Query()):
        """Concept map and per-pixel confidence (B x H x W), H x W = ``query.size`` (default
        the feature size). Each pixel descends from the root to its best child until a leaf,
        a concept the dataset defines with no defined child, a concept it labels whose
        children all score below ``query.threshold`` (BCE: 'none of them'; the softmax loss
        always picks a child, and refuses a threshold), or depth ``query.level``; the child
        scores at a pixel are the neuron's upsampled maps there (``grid.FeatureGrid``).
        ``query.static`` runs every neuron of the plan on every pixel, with the same result.

        ``query.classes``: only the neurons above their concepts run, and a pixel ends at
        the concept where its path leaves them (``MaskingTensors.vocabulary`` reads it).

        ``query.hedge``: each pixel stops at the deepest concept of that path whose
        confidence exceeds it (``hedging.hedge`` on ``levels``)."""
        if query.hedge is not None:
            return self.hedged(features, query)
        return self._descent(features, query).run()

    @torch.no_grad()
    def levels(self, features: torch.Tensor, query: Query = Query()):
        """``predict``'s descent as each pixel's concept and confidence (the product of the
        scores down to it) at every depth of the tree, B x L x H x W (``contract.Head``)."""
        return self._descent(features, query).levels()

    def _descent(self, features: torch.Tensor, query: Query) -> Descent:
        if query.threshold is not None and self.settings.loss == "softmax":
            self.refuse("threshold", query.threshold, "with loss softmax always picks a "
                        "child: a threshold needs loss bce")
        return Descent(self, features, query)

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
        scores = logits.softmax(1) if self.settings.loss == "softmax" else torch.sigmoid(logits)
        if d is None:
            allowed = self.trained_children[step.neuron, :step.children]
        else:
            allowed = self.masking.child_mask[d, step.neuron, :step.children]
        shape = [1] * scores.dim()
        shape[1] = -1
        return scores.masked_fill(~allowed.view(shape), -1.0)


__all__ = ["DSSPNHead", "MODES"]
