"""Training targets on the tree, and the per-neuron losses (paper section 3.3-3.4).

A pixel of concept x trains every neuron on the path from the root to x: at neuron k (concept
K, an ancestor of x) the child on the path is positive and K's other children negative. The
dataset's concept mask removes from the loss the children it does not define (Cityscapes has
no 'lane marking' under 'road', so road's lane-marking output is not trained on Cityscapes).
A pixel labelled with an inner concept stops there (ADE20K 'animal': the animal neuron is not
activated for it) - unless the dataset also labels concepts below it (ADE20K 'chair' beside
'armchair'): then its label means 'none of my finer labels', and with ``exclusive_negatives``
it trains that neuron with all defined children negative.

With the softmax loss a pixel cannot say 'none of the children', so exclusive pixels do not
train and prediction never stops at such a concept: one more reason the paper prefers BCE.

All of it is table lookups on whole label maps: no per-pixel Python.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dsspn_cli.hierarchy.tables import IGNORE


class TreeTensors(torch.nn.Module):
    """The masking tables as tensors on the model's device (non-persistent buffers: the tree
    travels in checkpoints as data, not as weights)."""

    def __init__(self, table):
        super().__init__()
        self.table = table
        self.names = list(table.datasets)
        depth = max(table.max_depth, 1)
        num_children = max(len(c) for c in table.neuron_children)
        children = torch.full((len(table.neuron_concept), num_children), IGNORE)
        for k, kids in enumerate(table.neuron_children):
            children[k, : len(kids)] = torch.tensor(kids)
        self.max_depth = depth
        self.register_buffer("path_neuron", torch.tensor(
            [row + [IGNORE] * (depth - len(row)) for row in table.path_neuron]), False)
        self.register_buffer("path_child", torch.tensor(
            [row + [IGNORE] * (depth - len(row)) for row in table.path_child]), False)
        self.register_buffer("concept_neuron", torch.tensor(table.concept_neuron), False)
        self.register_buffer("neuron_concept", torch.tensor(table.neuron_concept), False)
        self.register_buffer("neuron_depth", torch.tensor(
            [table.depth[c] for c in table.neuron_concept]), False)
        self.register_buffer("neuron_children", children, False)
        masks, exclusive, concept_label = [], [], []
        for name in self.names:
            data = table.datasets[name]
            mask = torch.zeros(len(table.neuron_concept), num_children, dtype=torch.bool)
            for k, row in enumerate(data.child_mask):
                mask[k, : len(row)] = torch.tensor(row, dtype=torch.bool)
            masks.append(mask)
            flags = torch.zeros(len(table.concepts), dtype=torch.bool)
            flags[data.exclusive] = True
            exclusive.append(flags)
            to_label = torch.full((len(table.concepts),), IGNORE)
            for label_id, concept in enumerate(data.label_to_concept):
                if concept >= 0 and to_label[concept] < 0:
                    to_label[concept] = label_id
            concept_label.append(to_label)
        self.register_buffer("child_mask", torch.stack(masks), False)      # D x K x J
        self.register_buffer("exclusive", torch.stack(exclusive), False)   # D x C
        self.register_buffer("concept_label", torch.stack(concept_label), False)  # D x C
        self.register_buffer("labelled_any", (torch.stack(concept_label) >= 0).any(0), False)
        up = torch.stack(concept_label).clone()
        for concept in range(len(table.concepts)):          # parents come first
            parent = table.parent[concept]
            if parent >= 0:
                up[:, concept] = torch.where(up[:, concept] >= 0, up[:, concept], up[:, parent])
        self.register_buffer("concept_label_up", up, False)   # D x C, nearest labelled

    def dataset_index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"dataset '{name}' is not in this tree ({', '.join(self.names)})")

    def active_neurons(self, target: torch.Tensor, dataset: int, fixed: bool = False,
                       exclusive_negatives: bool = True):
        """B x K: the neurons each image activates (paper 3.3); ``fixed``: every neuron whose
        children the dataset defines, for every image (the paper's 'DSSPN fixed')."""
        batch, num_neurons = target.shape[0], self.neuron_concept.numel()
        if fixed:
            used = self.child_mask[dataset].any(1)
            return used[None].expand(batch, num_neurons).clone()
        valid = target >= 0
        concepts = target.clamp(min=0)
        neurons = torch.where(valid[..., None], self.path_neuron[concepts], IGNORE)
        active = torch.zeros(batch, num_neurons + 1, dtype=torch.bool, device=target.device)
        active.scatter_(1, (neurons + 1).flatten(1), True)
        if exclusive_negatives:
            stops = valid & self.exclusive[dataset][concepts]
            own = torch.where(stops, self.concept_neuron[concepts], IGNORE)
            active.scatter_(1, (own + 1).flatten(1), True)
        return active[:, 1:]

    def neuron_targets(self, target: torch.Tensor, neuron: int, dataset: int,
                       exclusive_negatives: bool = True):
        """For the pixels of ``target`` (n x h x w): which count at this neuron, and the index
        of the child on their path (-1 for exclusive 'none of the children' pixels)."""
        valid = target >= 0
        concepts = target.clamp(min=0)
        level = int(self.neuron_depth[neuron])
        below = valid & (self.path_neuron[concepts, level] == neuron)
        child = torch.where(below, self.path_child[concepts, level], IGNORE)
        if exclusive_negatives:
            own = int(self.neuron_concept[neuron])
            if bool(self.exclusive[dataset, own]):
                below = below | (valid & (target == own))
        return below, child


def neuron_loss(logits: torch.Tensor, counts: torch.Tensor, child: torch.Tensor,
                child_mask: torch.Tensor, kind: str = "bce") -> torch.Tensor:
    """Summed loss of one neuron's child maps (n x J x h x w) over the counted pixels.

    bce: per-pixel sigmoid binary cross-entropy on each defined child (the paper's);
    softmax: cross-entropy over the defined children (its ablation; exclusive pixels, which
    have no child to point to, do not count).
    """
    num_children = logits.shape[1]
    mask = child_mask[:num_children]
    if kind == "bce":
        onehot = F.one_hot(child.clamp(min=0), num_children).permute(0, 3, 1, 2).to(logits.dtype)
        onehot = onehot * (child >= 0)[:, None]
        weight = counts[:, None] & mask[None, :, None, None]
        loss = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none")
        return (loss * weight).sum()
    if kind == "softmax":
        masked = logits.masked_fill(~mask[None, :, None, None], -1e4)
        labels = torch.where(counts & (child >= 0), child, IGNORE)
        return F.cross_entropy(masked, labels, ignore_index=IGNORE, reduction="sum")
    raise ValueError(f"unknown loss '{kind}' (bce, softmax)")
