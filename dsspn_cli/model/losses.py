"""The per-neuron losses (paper section 3.3-3.4); the targets come from ``masking.py``.

With the softmax loss a pixel cannot say 'none of the children', so exclusive pixels do not
train and prediction never stops at such a concept: one more reason the paper prefers BCE.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dsspn_cli.hierarchy.tables import IGNORE


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
        # child -1 (exclusive: 'none of them') matches no child. (F.one_hot would check the
        # range of child on the host: a wait on the device per neuron.)
        index = torch.arange(num_children, device=child.device).view(1, -1, 1, 1)
        onehot = (child[:, None] == index).to(logits.dtype)
        weight = counts[:, None] & mask[None, :, None, None]
        loss = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none")
        return (loss * weight).sum()
    if kind == "softmax":
        masked = logits.masked_fill(~mask[None, :, None, None], -1e4)
        labels = torch.where(counts & (child >= 0), child, IGNORE)
        return F.cross_entropy(masked, labels, ignore_index=IGNORE, reduction="sum")
    raise ValueError(f"unknown loss '{kind}' (bce, softmax)")
