"""A segmentation model: a dilated ResNet backbone and a head on the concept tree (a
``contract.Head``: the DSSPN head, the flat baseline or any head of ``config.HEADS``);
``build_model`` is the one factory training and checkpoint loading use.

Every head trains from concept maps and predicts concept maps (the tree's ids);
``concepts_to_labels`` writes a prediction in a dataset's own label ids.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from dsspn_cli.model.config import ModelConfig, head_class
from dsspn_cli.model.contract import Query


class Segmenter(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head
        # Upsample with each feature cell on the pixel its labels were taken from (True), or
        # as F.interpolate(align_corners=False) does, half a stride off (False: kept to
        # measure the difference, see benchmarks/ablation.py).
        self.aligned = True

    @property
    def masking(self):
        return self.head.masking

    def forward(self, images: torch.Tensor, target: torch.Tensor, dataset: str) -> torch.Tensor:
        """Training loss; ``target`` is a concept map at image or feature resolution."""
        features = self.backbone(images)
        return self.head(features, subsample_target(target, features.shape[-2:]), dataset)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, query: Query = Query()):
        """Concept map and confidence at the image size (``query``'s size and stride are the
        images' and the backbone's). With ``query.classes``, the map holds each pixel's
        class index, or -1 for none of them ('other'); hedged (``query.hedge``), a pixel
        that stopped above some classes' concepts, unsure which, holds ``len(classes) + 1
        + concept`` (``MaskingTensors.hedged_vocabulary``)."""
        features = self.backbone(images)
        concepts, confidence = self.head.predict(features, self._query(images, query))
        if query.classes is not None:
            read = (self.masking.vocabulary if query.hedge is None else
                    self.masking.hedged_vocabulary)
            concepts = read(query.classes)[concepts]
        return concepts, confidence

    @torch.no_grad()
    def levels(self, images: torch.Tensor, query: Query = Query()):
        """Each pixel's concept and confidence at every depth of the tree, B x L x H x W at
        the image size (``contract.Head.levels``; concepts also with ``query.classes``):
        the whole of what hedged prediction chooses from, for every threshold at once."""
        return self.head.levels(self.backbone(images), self._query(images, query))

    def _query(self, images: torch.Tensor, query: Query) -> Query:
        return replace(query, size=tuple(images.shape[-2:]), stride=self.stride)

    @property
    def stride(self) -> int | None:
        """Where feature cells sit among the pixels (see ``grid.FeatureGrid``): cell i on
        pixel s*i, where the ResNet's padded strided convolutions centre it and where
        ``subsample_target`` takes its training label; None places cell i at s*i + (s-1)/2,
        as ``F.interpolate(align_corners=False)`` does."""
        return getattr(self.backbone, "output_stride", None) if self.aligned else None

    def concepts_to_labels(self, concepts: torch.Tensor, dataset: str) -> torch.Tensor:
        return self.masking.concepts_to_labels(concepts, dataset)


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


def build_model(table, config: ModelConfig = ModelConfig(), datasets: list[str] | None = None,
                pretrained: bool = True) -> Segmenter:
    """The model ``config`` describes on ``table``'s tree, its head the one ``config.head.type``
    names in ``HEADS``. ``datasets``: the datasets it will train on (the flat head gets their
    classes; default: every dataset of the tree). ``pretrained``: load
    ``config.backbone_weights`` (not when a checkpoint follows)."""
    from dsspn_cli.model.backbone import build_backbone

    weights = config.backbone_weights if pretrained else None
    backbone = build_backbone(config.backbone, config.output_stride, weights,
                              norm=config.backbone_norm)
    head = head_class(config.head.type)(table, backbone.out_channels, config.head, datasets)
    return Segmenter(backbone, head)


__all__ = ["Segmenter", "build_model", "subsample_target"]
