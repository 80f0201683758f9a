"""Hedged prediction: a pixel stops above its leaf when the model is unsure below.

Deng, Krause, Berg and Fei-Fei, "Hedging your bets" (CVPR 2012, DARTS), choose for each input
the node of the hierarchy with the largest expected information gain whose expected
accuracy stays at least 1 - epsilon. The probability that a concept v is right (the true
concept at or below it) is what both heads can read per pixel along its path:

- DSSPN: the product of the chosen children's scores from the root to v (each sigmoid score
  the model's estimate of 'this child, given the parent'), the confidence it reports;
- the flat head: the sum of its class probabilities at or below v.

Both only fall along a path (a score is at most 1; a subtree's sum at most its parent's), so
'the deepest concept whose confidence exceeds t' is a prefix of the path: the rule here.
t = 0 keeps today's answer (every confidence is floored at ``TINY``, above 0), t = 1 stops
every pixel at the root (no confidence exceeds 1); the threshold that reaches an accuracy
the user chooses is read off the accuracy curve on validation data (``engine/hedging.py``),
as DARTS finds its operating point by search on held-out data.

A head's ``levels`` gives, per pixel and per depth of the tree (0 = the root), the concept it
holds there and that concept's confidence (``Head.levels``, B x L x H x W); ``hedge`` cuts
it at a threshold. No data-dependent control flow: export traces it.
"""

from __future__ import annotations

import torch

from dsspn_cli.errors import UserError

TINY = torch.finfo(torch.float32).tiny      # a confidence floor above 0: t = 0 hedges nothing


def check_threshold(value: float | None, option: str = "--hedge-threshold") -> float | None:
    """A hedging threshold is a confidence: 0 (no hedging) to 1 (every pixel at the root)."""
    if value is None:
        return None
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise UserError(f"{option} {value:g}: give a confidence from 0 (no hedging) to 1 "
                        "(every pixel at the root)")
    return value


def settle(confidence: torch.Tensor) -> torch.Tensor:
    """Per-level confidences (B x L x H x W) as the rule reads them: the root's 1, every
    other floored at ``TINY`` and never above the level before it (sums of rounded
    probabilities can exceed their parent's by an ulp)."""
    levels = [torch.ones_like(confidence[:, 0])]
    for level in confidence[:, 1:].clamp(TINY, 1.0).unbind(1):
        # A running minimum over the few levels (ONNX has no cummin).
        levels.append(torch.minimum(level, levels[-1]))
    return torch.stack(levels, 1)


def hedge(concepts: torch.Tensor, confidence: torch.Tensor, threshold: float):
    """Each pixel's deepest concept whose confidence exceeds ``threshold``, the root where
    none does: concept map and its confidence (B x H x W) from ``levels`` (B x L x H x W,
    confidences falling along L, as ``settle`` leaves them)."""
    level = ((confidence > threshold).sum(1, keepdim=True) - 1).clamp(min=0)
    return concepts.gather(1, level)[:, 0], confidence.gather(1, level)[:, 0]


__all__ = ["TINY", "check_threshold", "hedge", "settle"]
