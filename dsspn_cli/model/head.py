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
data-dependent control flow (export).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from dsspn_cli.hierarchy.tables import IGNORE
from dsspn_cli.model.config import HeadConfig
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
    def __init__(self, table, in_channels: int, config: HeadConfig = HeadConfig()):
        super().__init__()
        self.config = config
        self.masking = MaskingTensors(table)
        self.transition = Transition(in_channels, config.root_width, config.transition_rates)
        # Neuron k's inputs among the neurons, root first (-1 stands for the root features).
        self.inputs: list[list[int]] = []
        for chain in self.masking.neuron_ancestors:
            sources = [-1] + chain
            self.inputs.append(sources if config.ancestors == "all" else sources[-1:])
        self.neurons = nn.ModuleList(
            SemanticNeuron(self._width(sources), len(table.neuron_children[k]), config)
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
            total = sum(self._run(root[b:b + 1], target[b:b + 1], active[b:b + 1], d)
                        for b in range(root.shape[0]))
        else:
            total = self._run(root, target, active, d)
        return total / normaliser

    def _run(self, root, target, active, d) -> torch.Tensor:
        """Every active neuron once, on the images that activate it (rows of the batch)."""
        every = torch.arange(root.shape[0], device=root.device)
        outputs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {-1: (every, root)}
        # Zero, but attached to the graph: a batch without labelled pixels still backpropagates.
        total = root.sum() * 0
        for k, neuron in enumerate(self.neurons):          # concept order: parents first
            rows = active[:, k].nonzero().flatten()
            if rows.numel() == 0:
                continue
            hidden = self._hidden(neuron, rows, [outputs[s] for s in self.inputs[k]])
            outputs[k] = (rows, hidden)
            counts, child = self.masking.neuron_targets(target[rows], k, d,
                                                        self.config.exclusive_negatives)
            logits = neuron.predict(hidden)
            total = total + neuron_loss(logits, counts, child, self.masking.child_mask[d, k],
                                        self.config.loss)
        return total

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
                threshold: float = 0.5, static: bool = False):
        """Concept map and per-pixel confidence (B x H x W), H x W = ``size`` (default the
        feature size). Each pixel descends from the root to its best child until a leaf, a
        concept the dataset defines with no defined child, a concept it labels whose children
        all score below ``threshold`` (BCE: 'none of them'), or depth ``level``. ``static``
        runs every neuron of the plan (a traceable graph); otherwise neurons no pixel
        reaches are skipped, which changes nothing in the result."""
        masking = self.masking
        softmax = self.config.loss == "softmax"
        root = self.transition(features)
        size = tuple(size or root.shape[-2:])
        d = None if dataset is None else masking.dataset_index(dataset)
        current = torch.full((root.shape[0], *size), masking.table.neuron_concept[0],
                             dtype=torch.long, device=root.device)
        confidence = torch.ones(current.shape, dtype=root.dtype, device=root.device)
        hidden: dict[int, torch.Tensor] = {-1: root}
        for step in masking.descent(dataset, level, softmax):
            k = step.neuron
            # Pixels only move down, parents run first: nobody here means nobody below.
            if not static and not bool((current == step.concept).any()):
                continue
            hidden[k] = self.neurons[k](self._combine([hidden[s] for s in self.inputs[k]]))
            logits = F.interpolate(self.neurons[k].predict(hidden[k]), size=size,
                                   mode="bilinear", align_corners=False)
            scores = logits.softmax(1) if softmax else torch.sigmoid(logits)
            if d is not None:
                allowed = masking.child_mask[d, k, :step.children]
                scores = scores.masked_fill(~allowed[None, :, None, None], -1.0)
            current, confidence = descend(current, confidence, scores, step.concept,
                                          masking.neuron_children[k, :step.children],
                                          step.can_stop, threshold)
        return current, confidence


__all__ = ["DSSPNHead", "MODES", "descend", "IGNORE"]
