"""The flat baseline: DeepLabv2's ASPP (four 3x3 atrous branches, rates 6/12/18/24, each
predicting every class, summed) and one softmax over a dataset's classes, on the same
backbone, so every comparison the paper makes (Table 6: DeepLabv2 vs DSSPN) can be made."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dsspn_cli.hierarchy.tables import IGNORE
from dsspn_cli.model.head import subsample_target


class FlatHead(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, rates=(6, 12, 18, 24)):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=rate, dilation=rate)
            for rate in rates)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return sum(branch(features) for branch in self.branches)


class FlatSegmenter(nn.Module):
    """Backbone + FlatHead for one dataset; classes are its labels that map to a concept."""

    def __init__(self, backbone: nn.Module, table, dataset: str):
        super().__init__()
        data = table.dataset(dataset)
        self.dataset = dataset
        self.label_ids = [i for i, c in enumerate(data.label_to_concept) if c >= 0]
        concept_to_class = torch.full((len(table.concepts),), IGNORE)
        for k, label_id in enumerate(self.label_ids):
            concept_to_class[data.label_to_concept[label_id]] = k
        self.register_buffer("concept_to_class", concept_to_class, False)
        self.register_buffer("class_to_label", torch.tensor(self.label_ids), False)
        self.backbone = backbone
        self.head = FlatHead(backbone.out_channels, len(self.label_ids))

    def forward(self, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over labelled pixels; ``target`` in concept ids (any size)."""
        logits = self.head(self.backbone(images))
        target = subsample_target(target, tuple(logits.shape[-2:]))
        classes = torch.where(target >= 0, self.concept_to_class[target.clamp(min=0)], IGNORE)
        labelled = (classes >= 0).sum().clamp(min=1)
        return F.cross_entropy(logits, classes, ignore_index=IGNORE, reduction="sum") / labelled

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Label ids of the dataset at the image size."""
        logits = self.head(self.backbone(images))
        logits = F.interpolate(logits, size=images.shape[-2:], mode="bilinear",
                               align_corners=False)
        return self.class_to_label[logits.argmax(1)]
