"""The building blocks of the DSSPN head (paper section 3.1-3.2).

- ``Transition``: the layer T from backbone features to the root's hidden features, an ASPP of
  three 3x3 atrous convolutions (rates 6, 12, 18) whose outputs are summed (DeepLabv2), then
  ReLU. (The paper lost T's width; default c.)
- ``SemanticNeuron``: one per concept with two or more children. Its dense semantic-enhanced
  block reads the concatenated hidden features of all its ancestors, root first
  [h_root, ..., h_parent], through ReLU-Conv1x1 (bottleneck, default 4c) - ReLU-Conv3x3 (c),
  followed by a ReLU; a prediction convolution (default 1x1) gives one map per child.

  With ``readout: skip`` (the default) the prediction also reads the backbone features, as if
  its input were [hidden, backbone features]: the convolution is split in two, ``predict`` on
  the hidden features and ``direct`` on the backbone's, added. Why: trained from the paper's
  description alone, every decision reaches the backbone only through a chain of narrow
  blocks (c = 48 channels each, deeper concepts behind more of them) and DSSPN learned about
  four times slower than the flat head, whose classifier reads the backbone directly; with
  the skip each neuron is at least a linear classifier on the backbone features, refined by
  its ancestors' context (the README's ablation table measures both).
"""

from __future__ import annotations

import torch
from torch import nn

from dsspn_cli.model.config import DSSPNSettings


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "none":
        return nn.Identity()
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(16, channels), channels)
    raise ValueError(f"unknown norm '{kind}' (none, batch, group)")


class Transition(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, rates=(6, 12, 18)):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, out_channels, 3, padding=rate, dilation=rate)
            for rate in rates)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.relu(sum(branch(features) for branch in self.branches))


class SemanticNeuron(nn.Module):
    def __init__(self, in_channels: int, num_children: int, config: DSSPNSettings,
                 backbone_channels: int | None = None):
        super().__init__()
        self.in_channels = in_channels
        self.reduce = nn.Conv2d(in_channels, config.bottleneck_width, 1, bias=False)
        self.norm1 = _norm(config.norm, config.bottleneck_width)
        self.conv = nn.Conv2d(config.bottleneck_width, config.hidden, 3, padding=1,
                              bias=config.norm == "none")
        self.norm2 = _norm(config.norm, config.hidden)
        self.predict = nn.Conv2d(config.hidden, num_children, config.predict_kernel,
                                 padding=config.predict_kernel // 2)
        self.direct = None
        if config.readout == "skip":
            # No bias: ``predict`` has one, and the two are a single convolution.
            self.direct = nn.Conv2d(backbone_channels, num_children, config.predict_kernel,
                                    padding=config.predict_kernel // 2, bias=False)

    def bottleneck(self, ancestors: torch.Tensor) -> torch.Tensor:
        # The ancestors' features are outputs of ReLUs already, so the block's leading ReLU
        # is the identity on them and is left out.
        return torch.relu(self.norm1(self.reduce(ancestors)))

    def hidden(self, bottleneck: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.norm2(self.conv(bottleneck)))

    def forward(self, ancestors: torch.Tensor) -> torch.Tensor:
        """The neuron's hidden features (c channels) from its combined ancestor features;
        ``predict`` turns them into one map per child."""
        return self.hidden(self.bottleneck(ancestors))

    def read(self, hidden: torch.Tensor, direct: torch.Tensor | None) -> torch.Tensor:
        """One map per child from the hidden features, plus ``direct(features)`` with the
        skip readout (computed by the caller, who knows which images' features to use)."""
        logits = self.predict(hidden)
        return logits if direct is None else logits + direct
