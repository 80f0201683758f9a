"""What a segmentation head is and what it owes: the contract ``DSSPNHead`` (``head.py``) and
``FlatHead`` (``flat.py``) keep. A third head is one file with a ``Head`` subclass and its
``Settings``, and one line in ``config.HEADS``; ``build_model``, checkpoints, ``--head`` and
``--set head.KEY=VALUE`` then know it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from dsspn_cli.errors import UserError
from dsspn_cli.model.config import HeadSettings
from dsspn_cli.model.hedging import hedge
from dsspn_cli.model.masking import MaskingTensors, class_sets


@dataclass(frozen=True)
class Query:
    """What a prediction is asked for; a head honours each field or refuses it in one line.

    - ``dataset``: answer in the concepts that dataset defines (None: in those some training
      dataset of the model defines).
    - ``level``: stop at that depth of the tree (None: as deep as the concepts go).
    - ``classes``: the vocabulary, the set of concept ids of each class (a concept id alone
      is a class of one; ``masking.class_sets``). The answer is read in it: a pixel at or
      below a concept of a class is that class, else 'other' (``masking.vocabulary``).
    - ``threshold``: the score no child reaching it means 'none of them' (DSSPN with BCE;
      None: the head's own, 0.5).
    - ``static``: no data-dependent control flow (export traces the graph).
    - ``size``, ``stride``: the answer's height and width (None: the features') and where
      the feature cells sit among its pixels (``grid.FeatureGrid``); ``Segmenter.predict``
      sets both from its images and backbone.
    - ``hedge``: a confidence from 0 to 1; each pixel stops at the deepest concept of its
      path whose confidence exceeds it, the root where none does (``hedging.hedge``; None
      or 0: no hedging). It composes with the fields above: a pixel never goes below what
      they allow, and stops higher where it is unsure.
    """

    dataset: str | None = None
    level: int | None = None
    classes: tuple[frozenset[int], ...] | None = None
    threshold: float | None = None
    static: bool = False
    size: tuple[int, int] | None = None
    stride: int | None = None
    hedge: float | None = None

    def __post_init__(self):
        if self.classes is not None:
            object.__setattr__(self, "classes", class_sets(self.classes))


class Head(nn.Module):
    """A segmentation head on the concept tree: backbone features in, a loss or concepts out.

    Built from ``Head(table, in_channels, settings, datasets)``: the tree's ``MaskingTable``,
    the backbone's feature channels, its own settings (an instance of ``Settings``, its
    ``HeadSettings`` subclass; None: their defaults) and the datasets it trains on (None:
    every dataset of the tree). It keeps ``settings`` and ``masking`` (the tables as
    tensors, through which the segmenter, evaluation and export read labels). Its weights
    are all a checkpoint holds of it: tree and settings travel as data and rebuild it.

    Training, ``forward(features, target, dataset) -> loss``: features B x C x h x w; target
    B x h x w concept ids at the features' resolution, -1 where unlabelled; a scalar that
    backpropagates even when no pixel is labelled. Keyword arguments of its own may follow.

    Inference, ``predict(features, query: Query) -> (concepts, confidence)``, under
    ``torch.no_grad``: B x H x W concept ids of the tree and confidences in [0, 1], for
    every field of ``query`` honoured or refused with ``refuse`` (one line), none ignored.
    With ``query.classes`` a head may skip work (DSSPN runs only the neurons above them),
    and returns concepts that ``masking.vocabulary`` reads as each pixel's class: DSSPN's
    answer reads in them as its whole answer does; the flat head sums its probabilities
    into each class first (MSeg's way).

    Hedging, ``levels(features, query) -> (concepts, confidence)``: B x L x H x W, for each
    depth of the tree (L = its depth + 1, 0 the root) the concept each pixel holds there
    and the probability that it is right, falling along L (``hedging.settle``); the
    deepest level is the pixel's unhedged answer, read in ``query.classes`` as concepts
    (not classes). ``predict`` with ``query.hedge`` cuts it (``hedged``).
    """

    Settings: ClassVar[type[HeadSettings]]

    def __init__(self, table, in_channels: int, settings: HeadSettings | None = None,
                 datasets: list[str] | None = None):
        super().__init__()
        settings = self.Settings() if settings is None else settings
        if not isinstance(settings, self.Settings):
            raise TypeError(f"{type(self).__name__} takes {self.Settings.__name__}, not "
                            f"{type(settings).__name__}")
        self.settings = settings
        self.masking = MaskingTensors(table)

    def forward(self, features: torch.Tensor, target: torch.Tensor,
                dataset: str) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, features: torch.Tensor, query: Query) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def levels(self, features: torch.Tensor, query: Query) -> tuple[torch.Tensor, torch.Tensor]:
        self.refuse("hedge", query.hedge, "has no per-level confidences to hedge with")

    def hedged(self, features: torch.Tensor, query: Query) -> tuple[torch.Tensor, torch.Tensor]:
        """``predict``'s answer with ``query.hedge``: ``levels`` cut at the threshold."""
        return hedge(*self.levels(features, query), query.hedge)

    def refuse(self, setting: str, value, why: str):
        """A query setting this head cannot honour, said in one line."""
        raise UserError(f"{setting} {value}: the {self.settings.type} head {why}")


__all__ = ["Head", "Query"]
