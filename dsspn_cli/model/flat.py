"""The flat baseline: DeepLabv2's ASPP (four 3x3 atrous branches, rates 6/12/18/24, each
predicting every class, summed) and one softmax, on the same backbone, so every comparison
the paper makes (Table 6: DeepLabv2 vs DSSPN) can be made with everything else equal.

Its classes are the concepts its datasets label, one logit each (a concept several datasets
label, such as 'car', is one class). A batch of one dataset is trained with a softmax over
that dataset's classes only (the flat counterpart of concept masking), and prediction for a
dataset chooses among its classes; without a dataset, among all of them. It predicts concept
ids, as the DSSPN head does, so both evaluate, predict and export alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dsspn_cli.hierarchy.tables import IGNORE
from dsspn_cli.model.config import FlatSettings
from dsspn_cli.model.contract import Head, Query
from dsspn_cli.model.grid import FeatureGrid
from dsspn_cli.model.hedging import settle

MASKED = -1e4        # a logit no class reaches, representable in float16


class FlatHead(Head):
    """DeepLabv2's classifier as a ``contract.Head``; its settings are ``FlatSettings``."""

    Settings = FlatSettings

    def __init__(self, table, in_channels: int, settings: FlatSettings | None = None,
                 datasets: list[str] | None = None):
        super().__init__(table, in_channels, settings, datasets)
        names = list(datasets) if datasets else list(table.datasets)
        self.datasets = names
        classes = sorted({c for name in names for c in table.dataset(name).concept_label})
        concept_class = torch.full((len(table.concepts),), IGNORE)
        concept_class[classes] = torch.arange(len(classes))
        member = torch.zeros(len(table.datasets), len(classes), dtype=torch.bool)
        for d, name in enumerate(table.datasets):
            if name in names:
                member[d, concept_class[list(table.datasets[name].concept_label)]] = True
        self.register_buffer("class_concept", torch.tensor(classes), False)
        self.register_buffer("concept_class", concept_class, False)
        self.register_buffer("dataset_classes", member, False)     # D x classes
        self.class_concepts = classes                  # host copy: tables built from it
        self._cuts: dict[tuple, list] = {}             # hedging's partitions, by cut
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, len(classes), 3, padding=rate, dilation=rate)
            for rate in self.settings.flat_rates)

    def logits(self, features: torch.Tensor, dataset: str | None) -> torch.Tensor:
        logits = sum(branch(features) for branch in self.branches)
        if dataset is None:
            return logits
        if dataset not in self.datasets:
            raise KeyError(f"dataset '{dataset}': this flat model was trained on "
                           f"{', '.join(self.datasets)} only")
        allowed = self.dataset_classes[self.masking.dataset_index(dataset)]
        return logits.masked_fill(~allowed[None, :, None, None], MASKED)

    def forward(self, features: torch.Tensor, target: torch.Tensor, dataset: str) -> torch.Tensor:
        """Mean cross-entropy over the labelled pixels; ``target`` in concept ids at the
        feature resolution."""
        logits = self.logits(features, dataset)
        classes = torch.where(target >= 0, self.concept_class[target.clamp(min=0)], IGNORE)
        labelled = (classes >= 0).sum().clamp(min=1)
        return F.cross_entropy(logits, classes, ignore_index=IGNORE, reduction="sum") / labelled

    @torch.no_grad()
    def predict(self, features: torch.Tensor, query: Query = Query()):
        """Concept map and confidence (the class's softmax probability) at ``query.size``,
        the logits upsampled as the DSSPN head's (``grid.FeatureGrid``), chosen among the
        classes of ``query.dataset``; with ``query.level``, each concept is replaced by its
        ancestor at that depth. ``query.static``: it has no data-dependent control flow.
        ``query.classes``: the probabilities summed into each of them (``_vocabulary``). A
        ``query.threshold`` is refused: its softmax always picks one of its classes.
        ``query.hedge``: ``levels`` cut at it (``hedging.hedge``)."""
        if query.hedge is not None:
            return self.hedged(features, query)
        return self._answer(self._probabilities(features, query), query)

    def _answer(self, probabilities: torch.Tensor, query: Query):
        concepts = self.class_concept
        if query.level is not None:
            levels = self.masking.concept_at_level
            concepts = levels[concepts, min(query.level, levels.shape[1] - 1)]
        if query.classes is not None:
            return self._vocabulary(probabilities, concepts, query.classes)
        confidence, index = probabilities.max(1)
        return concepts[index], confidence

    @torch.no_grad()
    def levels(self, features: torch.Tensor, query: Query = Query()):
        """Per pixel and depth of the tree (B x L x H x W, ``contract.Head``): the likeliest
        concept there and its probability, the sum of its classes' (a concept is right when
        the true class lies at or below it). The classes are first cut to what
        ``query.level`` and ``query.classes`` allow, so no pixel goes below them. At each
        depth the concepts partition the classes, each partition finer than the one above,
        so the best sum only falls with depth; where it exceeds 1/2 the concept is the one
        above all deeper answers. The deepest level is ``predict``'s own answer (uncut, the
        likeliest class; it falls in the likeliest concept of the level above only where
        that exceeds 1/2), so that a threshold of 0 hedges nothing."""
        probabilities = self._probabilities(features, query)
        concepts, confidence = [], []
        parts = self._partitions(query.level, query.classes, probabilities.device)
        for groups, members in parts[:-1]:
            sums = torch.einsum("bkhw,kg->bghw", probabilities, members)
            best, index = sums.max(1)
            concepts.append(groups[index])
            confidence.append(best)
        answer, sure = self._answer(probabilities, query)
        concepts.append(answer)
        confidence.append(sure)
        return torch.stack(concepts, 1), settle(torch.stack(confidence, 1))

    def _partitions(self, level: int | None, classes, device) -> list:
        """For each depth of the tree, the concepts the (cut) classes fall in there and which
        class falls in which (a one-hot K x G matrix); built once per cut, on the host, so
        that export traces constants."""
        key = (level, classes, str(device))
        if key not in self._cuts:
            rows = self.masking.table.levels()                     # C x L, host lists
            cut = list(self.class_concepts)
            if classes is not None:
                deepest = self.masking.class_concepts(classes)
                cut = [deepest[c] for c in cut]
            if level is not None:
                cut = [rows[c][min(level, len(rows[c]) - 1)] for c in cut]
            parts = []
            for depth in range(len(rows[0])):
                at = [rows[c][depth] for c in cut]
                groups = sorted(set(at))
                place = {g: i for i, g in enumerate(groups)}
                members = torch.zeros(len(cut), len(groups), device=device)
                members[torch.arange(len(cut)), torch.tensor([place[g] for g in at])] = 1.0
                parts.append((torch.tensor(groups, device=device), members))
            self._cuts[key] = parts
        return self._cuts[key]

    def _probabilities(self, features: torch.Tensor, query: Query) -> torch.Tensor:
        """Class probabilities at ``query.size`` (B x K x H x W): the logits upsampled as the
        DSSPN head's (``grid.FeatureGrid``), then the softmax, among ``query.dataset``'s
        classes."""
        if query.threshold is not None:
            self.refuse("threshold", query.threshold, "has no 'none of them': its softmax "
                        "always picks one of its classes")
        logits = self.logits(features, query.dataset).float()
        grid = FeatureGrid(logits.shape[-2:], query.size or logits.shape[-2:], query.stride,
                           logits.device)
        return grid.upsample(logits).softmax(1)

    def _vocabulary(self, probabilities: torch.Tensor, concepts: torch.Tensor, classes):
        """MSeg's reading of a flat prediction in other classes: each vocabulary class gets
        the summed probability of this head's classes it holds (read as
        ``MaskingTensors.vocabulary`` reads a concept: by the deepest class concept at or
        above it), 'other' the rest; the largest sum wins and is the confidence. The
        concept returned is the likeliest of the winner's own, so that the segmenter reads
        it as the winning class (or as 'other')."""
        group = self.masking.vocabulary(classes)[concepts]            # -1: other
        count = len(classes) + 1
        group = torch.where(group < 0, torch.full_like(group, count - 1), group)
        # N classes x (vocabulary + other), one 1 per row: the sums are one product.
        member = torch.nn.functional.one_hot(group, count).to(probabilities.dtype)
        sums = torch.einsum("bnhw,nk->bkhw", probabilities, member)
        confidence, winner = sums.max(1)
        mine = group[None, :, None, None] == winner[:, None]
        best = probabilities.masked_fill(~mine, -1.0).argmax(1)
        return concepts[best], confidence


__all__ = ["FlatHead"]
