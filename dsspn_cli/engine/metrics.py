"""Segmentation metrics from a confusion matrix, the way the benchmarks compute them.

``ConfusionMatrix`` counts (ground truth, prediction) pairs over the evaluated classes plus
one extra column for predictions that are no evaluated class (a concept the dataset does not
label, or its ignore value). Pixels whose ground truth is not evaluated are skipped. As in
cityscapesScripts, such a prediction is a false negative for the true class and a false
positive for none: IoU_c = TP / (TP + FN + FP), FP counted only over evaluated ground truth.

IoU per level of the hierarchy cuts concept maps at a depth with ``MaskingTable.levels``.
"""

from __future__ import annotations

import torch


class ConfusionMatrix:
    def __init__(self, num_classes: int, device="cpu"):
        self.num_classes = num_classes
        self.matrix = torch.zeros(num_classes, num_classes + 1, dtype=torch.int64,
                                  device=device)

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """``prediction``, ``target``: class indices of the same shape; a target outside
        [0, n) is not evaluated, a prediction outside it is 'no evaluated class'."""
        n = self.num_classes
        valid = (target >= 0) & (target < n)
        truth = target[valid]
        guess = prediction[valid]
        guess = torch.where((guess >= 0) & (guess < n), guess, torch.full_like(guess, n))
        self.matrix += torch.bincount(truth * (n + 1) + guess,
                                      minlength=n * (n + 1)).view(n, n + 1)

    def iou(self) -> torch.Tensor:
        """IoU per class as a fraction (float64), NaN where the class has neither ground
        truth nor false positives."""
        m = self.matrix.double()
        tp = m.diagonal()
        union = m.sum(1) + m[:, : self.num_classes].sum(0) - tp
        return torch.where(union > 0, tp / union.clamp(min=1), torch.nan)

    def scores(self, names: list[str] | None = None) -> dict:
        """Percentages: mIoU, pixel accuracy, mean class accuracy and per class IoU/accuracy.

        Classes without any ground-truth pixel and without any false positive are left out
        of the means (their IoU is undefined), as the benchmarks do.
        """
        m = self.matrix.double()
        tp = m.diagonal()
        gt = m.sum(1)                       # every evaluated pixel of the class
        iou = self.iou()
        acc = torch.where(gt > 0, tp / gt.clamp(min=1), torch.nan)
        names = names or [str(i) for i in range(self.num_classes)]
        per_class = {name: {"iou": percent(iou[i]), "acc": percent(acc[i]), "pixels": int(gt[i])}
                     for i, name in enumerate(names)}
        total = gt.sum()
        return {       # the mean of no defined value is NaN, which percent makes None
            "mIoU": percent(torch.nanmean(iou)),
            "pixel_acc": percent(tp.sum() / total) if total > 0 else None,
            "mean_acc": percent(torch.nanmean(acc)),
            "per_class": per_class,
        }


def all_reduce(matrices: list[ConfusionMatrix], world) -> None:
    """Sum the counts of ``matrices`` over the ranks of ``world``, exactly (int64), in one
    collective; nothing to do on a single process."""
    if not world.distributed:
        return
    flat = torch.cat([m.matrix.flatten() for m in matrices])
    torch.distributed.all_reduce(flat)
    start = 0
    for m in matrices:
        m.matrix.copy_(flat[start:start + m.matrix.numel()].view_as(m.matrix))
        start += m.matrix.numel()


def percent(value: torch.Tensor):
    value = float(value)
    return None if value != value else 100.0 * value       # NaN -> None (JSON null)
