"""The DSSPN head's inference: hierarchical descent (paper section 3).

Every pixel starts at the root and follows its best child down to a leaf, or, for a target
dataset, to a concept that dataset defines (``descend``, one step per neuron); neurons no
pixel reaches are not run, unless ``static`` asks for a graph without data-dependent control
flow (export). Without a target dataset a pixel chooses only among the children that one of
the model's training datasets defines: no prediction lands on a concept nothing trained.

The descent is decided on the feature cells, and only the pixels whose four cells disagree
are descended on their own (``Descent.cells``): where the four cells a pixel interpolates
between take one path, so does the pixel (a sum of logits with positive weights keeps their
order and their sign), so the result equals the descent of every pixel (``Descent.pixels``),
which ``static`` and the softmax loss run.

The same descent also gives each pixel's concept and confidence at every depth
(``Descent.levels``): hedged prediction (``hedging.py``) stops a pixel at the deepest of them
whose confidence exceeds a threshold, and evaluation sweeps every threshold from it at once.
"""

from __future__ import annotations

from itertools import accumulate

import torch

from dsspn_cli.model.grid import FeatureGrid
from dsspn_cli.model.hedging import settle
from dsspn_cli.model.syncs import on_host

FEATURES = "backbone"   # the key of the backbone features among the features of a descent
SURE = 1e4          # a logit whose sigmoid is 1.0: 'no step here' multiplies nothing
THRESHOLD = 0.5     # a BCE child score below it is 'not this child'


def descend(current: torch.Tensor, confidence: torch.Tensor, scores: torch.Tensor,
            concept: int, children: torch.Tensor, can_stop: bool, threshold: float = 0.5):
    """One neuron's step of hierarchical inference: the pixels at ``concept`` move to their
    best-scoring child (``scores``: B x J x H x W; ``children``: its J concept ids), unless
    ``can_stop`` and no child reaches ``threshold`` ('none of them'). Confidence is the
    product of the scores along the path. No data-dependent control flow."""
    best, index = scores.max(1)
    move = current == concept
    if can_stop:
        move = move & (best >= threshold)
    return (torch.where(move, children[index], current),
            torch.where(move, confidence * best, confidence))


class Descent:
    """One prediction of a DSSPN head (``DSSPNHead.predict``): the head's neurons run depth
    by depth on the plan ``masking.descent`` makes for the query."""

    def __init__(self, head, features: torch.Tensor, query):
        self.head, self.masking = head, head.masking
        self.softmax = head.settings.loss == "softmax"
        root = head.transition(features)
        self.grid = FeatureGrid(root.shape[-2:], query.size or root.shape[-2:], query.stride,
                                root.device)
        self.depths = _by_depth(self.masking.descent(query.dataset, query.level, self.softmax,
                                                     query.classes))
        self.d = None if query.dataset is None else self.masking.dataset_index(query.dataset)
        self.threshold = THRESHOLD if query.threshold is None else query.threshold
        self.static = query.static
        self.hidden: dict = {-1: root, FEATURES: features}

    def run(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Concept map and confidence (B x H x W)."""
        concepts, after = self._descend()
        return concepts, after[-1] if after else torch.ones(concepts.shape,
                                                            device=concepts.device)

    def levels(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The same descent as ``run``, as each pixel's concept and confidence at every depth
        of the tree (B x L x H x W, ``contract.Head.levels``): the concept is the pixel's
        answer cut at that depth, the confidence the product of the scores down to it."""
        concepts, after = self._descend()
        table = self.masking.concept_at_level                  # C x L
        ones = torch.ones(concepts.shape, device=concepts.device)
        # A depth's steps move pixels from it to the next: level d holds the confidence
        # after the last step group above it (none: the root's 1).
        depths = [steps[0].depth for steps in self.depths]
        confidence = []
        for level in range(table.shape[1]):
            done = [conf for depth, conf in zip(depths, after) if depth < level]
            confidence.append(done[-1] if done else ones)
        return table[concepts].movedim(-1, 1), settle(torch.stack(confidence, 1))

    def _descend(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Concept map (B x H x W) and the confidence after each depth's steps."""
        if self.static or self.softmax:
            return self.pixels(skip=not self.static)
        return self.cells()

    def _step(self, current, confidence, scores, step):
        children = self.masking.neuron_children[step.neuron, :step.children]
        return descend(current, confidence, scores, step.concept, children, step.can_stop,
                       self.threshold)

    def _scores(self, logits: torch.Tensor, step) -> torch.Tensor:
        return self.head._scores(logits, step, self.d)

    def pixels(self, skip: bool):
        """Every pixel on its own, at full resolution (concepts, and confidences after each
        depth's steps); ``skip``: not the neurons no pixel reaches."""
        root = self.hidden[-1]
        current = torch.full((root.shape[0], *self.grid.size),
                             self.masking.table.neuron_concept[0], dtype=torch.long,
                             device=root.device)
        confidence = torch.ones(current.shape, device=root.device)
        after = []
        for steps in self.depths:
            logits: dict[int, torch.Tensor] = {}          # this depth's, used once
            if skip:
                # Pixels only move down, parents run first: nobody here means nobody below.
                present = _counts(current, len(self.masking.table.concepts))
                steps = [step for step in steps if present[step.concept]]
            self.head._logits([step.neuron for step in steps], self.hidden, logits)
            for step in steps:
                scores = self._scores(self.grid.upsample(logits[step.neuron]), step)
                current, confidence = self._step(current, confidence, scores, step)
            after.append(confidence)
        return current, after

    def cells(self):
        """The descent on the feature cells, read at the pixels where the four cells around
        agree, and on its own at the others; one wait on the device per depth and phase.
        Concepts, and confidences after each depth's steps."""
        root = self.hidden[-1]
        cells = torch.full(root.shape[:1] + root.shape[2:], self.masking.table.neuron_concept[0],
                           dtype=torch.long, device=root.device)
        unit = torch.ones(cells.shape, device=root.device)
        logits: dict[int, torch.Tensor] = {}
        chosen = []      # per depth: the logit of the child each cell took (SURE: none)
        for steps in self.depths:
            present = _counts(cells, len(self.masking.table.concepts))
            steps = [step for step in steps if present[step.concept]]
            self.head._logits([step.neuron for step in steps], self.hidden, logits)
            taken = torch.full(cells.shape, SURE, device=root.device)
            for step in steps:
                k = step.neuron
                scores = self._scores(logits[k], step)
                before = cells
                cells, _ = self._step(cells, unit, scores, step)
                best = logits[k].masked_fill(scores < 0, float("-inf")).max(1).values
                taken = torch.where(cells != before, best, taken)
            chosen.append(taken)
        concepts = self.grid.agreed(cells)
        confidence = torch.ones(concepts.shape, device=root.device)
        after = []
        for taken in chosen:
            confidence = confidence * torch.sigmoid(self.grid.upsample(taken))
            after.append(confidence)
        image, y, x = (concepts < 0).nonzero(as_tuple=True)
        if image.numel():
            concept, scores = self.points(logits, image, y, x)
            concepts[image, y, x] = concept
            for level, score in zip(after, scores):
                level[image, y, x] = score
        return concepts, after

    def points(self, logits: dict, image, y, x):
        """The descent of single pixels (their concepts, and their confidences after each
        depth's steps), each with its neurons' upsampled ``logits``; a
        neuron no cell reached is run now. Per depth the pixels are grouped by the concept
        they are at (one wait on the device), so each neuron reads only the pixels at its
        concept: a pixel costs the neurons on its path, not every neuron some pixel
        reached."""
        count = len(self.masking.table.concepts)
        current = torch.full(image.shape, self.masking.table.neuron_concept[0],
                             dtype=torch.long, device=image.device)
        confidence = torch.ones(image.shape, device=image.device)
        after = []
        for steps in self.depths:
            order = torch.argsort(current)
            sizes = _counts(current, count)
            starts = [0, *accumulate(sizes)]
            steps = [step for step in steps if sizes[step.concept]]
            self.head._logits([s.neuron for s in steps if s.neuron not in logits], self.hidden,
                              logits)
            for step in steps:
                at = order[starts[step.concept]:starts[step.concept] + sizes[step.concept]]
                scores = self._scores(self.grid.at(logits[step.neuron], image[at], y[at], x[at]),
                                      step)
                # Every pixel here is at the step's concept; the steps of one depth hold
                # disjoint pixels, so each writes its own.
                current[at], confidence[at] = self._step(current[at], confidence[at], scores,
                                                         step)
            after.append(confidence.clone())
        return current, after


def _by_depth(plan) -> list[list]:
    levels: dict[int, list] = {}
    for step in plan:
        levels.setdefault(step.depth, []).append(step)
    return [levels[depth] for depth in sorted(levels)]


def _counts(concepts: torch.Tensor, count: int) -> list[int]:
    """How many entries of ``concepts`` hold each concept (one wait on the device)."""
    return on_host(torch.bincount(concepts.flatten(), minlength=count))


__all__ = ["Descent", "descend", "FEATURES"]
