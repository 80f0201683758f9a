"""The DSSPN head: a semantic neuron graph built from the concept tree (paper section 3).

Training runs the dynamic structure: each image activates the neurons on the paths from the
root to the concepts in its label map, and each neuron runs once, on exactly the images that
need it, stacked (dynamic batching, paper 3.5). ``per_image`` runs the same sub-graphs one
image at a time (the slow way the paper improves on); ``fixed`` runs every neuron the dataset
uses on every image ('DSSPN fixed'). All three give the same loss.

Ancestor features: a neuron at depth d reads d + 1 feature maps. With ``storage="concat"``
each neuron keeps its own concatenated copy for backward, so memory grows with depth squared;
with ``storage="shared"`` (default) the concatenation is built in a transient buffer and the
block recomputed during backward (``torch.utils.checkpoint``, as torchvision's
memory-efficient DenseNet does), so only each neuron's own c channels are stored: linear in
depth, for about a third more head compute in backward.

Inference is hierarchical: every pixel starts at the root and follows its best child down to
a leaf, or, for a target dataset, to a concept that dataset defines; neurons no pixel reaches
are not run.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from dsspn_cli.hierarchy.tables import IGNORE
from dsspn_cli.model.losses import TreeTensors, neuron_loss
from dsspn_cli.model.neuron import HeadConfig, SemanticNeuron, Transition

MODES = ("dynamic", "per_image", "fixed")


class DSSPNHead(nn.Module):
    def __init__(self, table, in_channels: int, config: HeadConfig = HeadConfig()):
        super().__init__()
        self.config = config
        self.tree = TreeTensors(table)
        self.transition = Transition(in_channels, config.root_width, config.transition_rates)
        # Neuron k's ancestors among the neurons, root first (their features feed it).
        concept_neuron = table.concept_neuron
        self.ancestors: list[list[int]] = []
        for concept in table.neuron_concept:
            chain, parent = [], table.parent[concept]
            while parent >= 0:
                chain.append(concept_neuron[parent])
                parent = table.parent[parent]
            self.ancestors.append(chain[::-1])
        self.neurons = nn.ModuleList(
            SemanticNeuron(config.root_width + config.hidden * len(chain),
                           len(table.neuron_children[k]), config)
            for k, chain in enumerate(self.ancestors))

    # ---------------------------------------------------------------------------- training

    def forward(self, features: torch.Tensor, target: torch.Tensor, dataset: str,
                mode: str = "dynamic", normaliser: float | None = None) -> torch.Tensor:
        """The training loss of a batch from one dataset.

        ``target``: B x h x w concept ids at the feature resolution (-1 ignore). The loss is
        summed over pixels and neurons, divided by ``normaliser`` (default: the number of
        labelled pixels), so it does not depend on how the batch is executed.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        d = self.tree.dataset_index(dataset)
        if normaliser is None:
            normaliser = float((target >= 0).sum().clamp(min=1))
        root = self.transition(features)
        active = self.tree.active_neurons(target, d, mode == "fixed",
                                          self.config.exclusive_negatives)
        if mode == "per_image":
            total = sum(self._run(root[b:b + 1], target[b:b + 1], active[b:b + 1], d)
                        for b in range(root.shape[0]))
        else:
            total = self._run(root, target, active, d)
        return total / normaliser

    def _run(self, root, target, active, d) -> torch.Tensor:
        """Every active neuron once, on the images that activate it (rows of the batch)."""
        outputs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}   # k -> (rows, features)
        # Zero, but attached to the graph: a batch without labelled pixels still backpropagates.
        total = root.sum() * 0
        for k, neuron in enumerate(self.neurons):          # concept order: parents first
            rows = active[:, k].nonzero().flatten()
            if rows.numel() == 0:
                continue
            sources = [(torch.arange(root.shape[0], device=root.device), root)]
            sources += [outputs[a] for a in self.ancestors[k]]
            hidden = self._hidden(neuron, rows, sources)
            outputs[k] = (rows, hidden)
            counts, child = self.tree.neuron_targets(target[rows], k, d,
                                                     self.config.exclusive_negatives)
            logits = neuron.predict(hidden)
            total = total + neuron_loss(logits, counts, child, self.tree.child_mask[d, k],
                                        self.config.loss)
        return total

    def _hidden(self, neuron: SemanticNeuron, rows, sources) -> torch.Tensor:
        tensors = [t for _, t in sources]
        positions = [torch.searchsorted(have, rows) for have, _ in sources]

        def block(*inputs):
            gathered = [t.index_select(0, p) for t, p in zip(inputs, positions)]
            return neuron.hidden(neuron.bottleneck(torch.cat(gathered, 1)))

        # Batch norm would update its running statistics again in the recomputation.
        if self.config.storage == "shared" and self.config.norm != "batch" and \
                torch.is_grad_enabled():
            # Keep only the block's inputs (the ancestors' outputs, stored once each) and its
            # c-channel output; the concatenation and bottleneck are rebuilt in backward.
            return checkpoint(block, *tensors, use_reentrant=False)
        return block(*tensors)

    # ---------------------------------------------------------------------------- inference

    @torch.no_grad()
    def predict(self, features: torch.Tensor, size: tuple[int, int] | None = None,
                dataset: str | None = None, level: int | None = None,
                threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
        """Concept map and per-pixel confidence (B x H x W), H x W = ``size`` (default the
        feature size). Each pixel descends from the root to its best child until a leaf, a
        concept the dataset defines with no defined child, a concept it labels whose children
        all score below ``threshold`` (BCE: 'none of them'), or depth ``level``."""
        tree = self.tree
        root = self.transition(features)
        batch = root.shape[0]
        size = size or tuple(root.shape[-2:])
        d = None if dataset is None else tree.dataset_index(dataset)
        root_concept = int(tree.neuron_concept[0])
        current = torch.full((batch, *size), root_concept, dtype=torch.long,
                             device=root.device)
        confidence = torch.ones((batch, *size), dtype=root.dtype, device=root.device)
        hidden: dict[int, torch.Tensor] = {}
        for k, neuron in enumerate(self.neurons):
            concept = int(tree.neuron_concept[k])
            here = current == concept
            if level is not None and int(tree.neuron_depth[k]) >= level:
                continue
            # Pixels only move down, parents run first: nobody here means nobody below.
            if not bool(here.any()):
                continue
            inputs = [root] + [hidden[a] for a in self.ancestors[k]]
            hidden[k] = neuron.hidden(neuron.bottleneck(torch.cat(inputs, 1)))
            logits = F.interpolate(neuron.predict(hidden[k]), size=size, mode="bilinear",
                                   align_corners=False)
            scores = torch.sigmoid(logits) if self.config.loss == "bce" else logits.softmax(1)
            count = logits.shape[1]
            children = tree.neuron_children[k, :count]
            if d is not None:
                allowed = tree.child_mask[d, k, :count]
                if not bool(allowed.any()):
                    continue
                scores = scores.masked_fill(~allowed[None, :, None, None], -1.0)
            best, index = scores.max(1)
            move = here
            stoppable = (bool(tree.exclusive[d, concept]) if d is not None
                         else bool(tree.labelled_any[concept]))
            if stoppable and self.config.loss == "bce":
                move = move & (best >= threshold)
            current = torch.where(move, children[index], current)
            confidence = torch.where(move, confidence * best, confidence)
        return current, confidence

    def concepts_to_labels(self, concepts: torch.Tensor, dataset: str) -> torch.Tensor:
        """Concept map -> the dataset's label ids: a concept's own label, else that of its
        nearest labelled ancestor (for maps cut with ``level``), else the ignore value."""
        d = self.tree.dataset_index(dataset)
        labels = self.tree.concept_label_up[d][concepts]
        ignore = self.tree.table.datasets[dataset].ignore_index
        return torch.where(labels >= 0, labels, torch.full_like(labels, ignore))


def subsample_target(target: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A full-resolution concept map at the feature size, when the loader did not already
    subsample it (the paper compares predictions with labels subsampled by 8).

    Feature (i, j) of a stride-s ResNet sits on pixel (s*i, s*j) (its convolutions are padded
    so), so the labels are taken there: target[::s, ::s] has exactly ceil(H/s) rows.
    """
    if tuple(target.shape[-2:]) == tuple(size):
        return target
    stride = max(1, round(target.shape[-2] / size[0]))
    picked = target[..., ::stride, ::stride]
    if tuple(picked.shape[-2:]) == tuple(size):
        return picked
    return F.interpolate(target[:, None].float(), size=size, mode="nearest")[:, 0].long()


__all__ = ["DSSPNHead", "HeadConfig", "MODES", "subsample_target", "IGNORE"]
