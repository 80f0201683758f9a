"""DSSPN = a dilated ResNet backbone + the DSSPN head built from a concept tree's tables.

``grow_from`` loads a model trained on one tree into a model built from a larger tree,
keeping every neuron whose concept, children and ancestors are unchanged (paper 3.4,
'updating and extending'); new neurons keep their fresh initialisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dsspn_cli.model.head import MODES, DSSPNHead, subsample_target
from dsspn_cli.model.neuron import HeadConfig


class DSSPN(nn.Module):
    def __init__(self, backbone: nn.Module, table, config: HeadConfig = HeadConfig()):
        super().__init__()
        self.backbone = backbone
        self.head = DSSPNHead(table, backbone.out_channels, config)

    def forward(self, images: torch.Tensor, target: torch.Tensor, dataset: str,
                mode: str = "dynamic") -> torch.Tensor:
        """Training loss; ``target`` is a concept map at image or feature resolution."""
        features = self.backbone(images)
        return self.head(features, subsample_target(target, features.shape[-2:]), dataset,
                         mode)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, dataset: str | None = None,
                level: int | None = None):
        """Concept map and confidence at the image size."""
        return self.head.predict(self.backbone(images), tuple(images.shape[-2:]), dataset,
                                 level)


def build_dsspn(table, backbone: str = "resnet101", output_stride: int = 8,
                backbone_weights=None, config: HeadConfig = HeadConfig()) -> DSSPN:
    from dsspn_cli.model.backbone import build_backbone

    return DSSPN(build_backbone(backbone, output_stride, backbone_weights), table, config)


@dataclass
class GrowReport:
    kept: list[str]        # neurons whose concept, ancestors and children are unchanged
    extended: list[str]    # same concept and ancestors, children added or removed
    new: list[str]


def neuron_signature(table, k: int) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """A neuron's concept, its ancestors (whose features it reads, in order) and its
    ordered children."""
    concept = table.neuron_concept[k]
    ancestors, parent = [], table.parent[concept]
    while parent >= 0:
        ancestors.append(table.concepts[parent])
        parent = table.parent[parent]
    return (table.concepts[concept], tuple(ancestors[::-1]),
            tuple(table.concepts[c] for c in table.neuron_children[k]))


def grow_from(model: DSSPN, state_dict: dict, old_table) -> GrowReport:
    """Load ``state_dict`` (of a DSSPN on ``old_table``) into ``model`` (on a new table).

    A neuron whose concept and ancestors are unchanged keeps its dense block (it reads the
    same features); its prediction rows are kept for the children it still has, and children
    it gained start fresh. Other neurons start fresh.
    """
    new_table = model.head.tree.table
    old = {}
    for k in range(len(old_table.neuron_concept)):
        concept, ancestors, children = neuron_signature(old_table, k)
        old[(concept, ancestors)] = (k, children)
    own = model.state_dict()
    mapped, report = {}, GrowReport([], [], [])
    for k in range(len(new_table.neuron_concept)):
        concept, ancestors, children = neuron_signature(new_table, k)
        if (concept, ancestors) not in old:
            report.new.append(concept)
            continue
        k_old, old_children = old[(concept, ancestors)]
        prefix_old, prefix_new = f"head.neurons.{k_old}.", f"head.neurons.{k}."
        for key, value in state_dict.items():
            if not key.startswith(prefix_old):
                continue
            name = key[len(prefix_old):]
            if name.startswith("predict."):
                row = own[prefix_new + name].clone()
                for j, child in enumerate(children):
                    if child in old_children:
                        row[j] = value[old_children.index(child)]
                value = row
            mapped[prefix_new + name] = value
        (report.kept if children == old_children else report.extended).append(concept)
    for key, value in state_dict.items():
        if not key.startswith("head.neurons.") and key in own:
            mapped[key] = value
    for key, value in mapped.items():
        if own[key].shape != value.shape:
            raise ValueError(f"{key}: shape {tuple(value.shape)} does not fit "
                             f"{tuple(own[key].shape)}")
    own.update(mapped)
    model.load_state_dict(own)
    return report


__all__ = ["DSSPN", "build_dsspn", "grow_from", "GrowReport", "MODES", "HeadConfig"]
