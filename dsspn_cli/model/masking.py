"""The masking tables as tensors on the model's device, and the training targets they give.

A pixel of concept x trains every neuron on the path from the root to x: at neuron k (concept
K, an ancestor of x) the child on the path is positive and K's other children negative. The
dataset's concept mask removes from the loss the children it does not define (Cityscapes has
no 'lane marking' under 'road', so road's lane-marking output is not trained on Cityscapes).
A pixel labelled with an inner concept stops there (ADE20K 'animal': the animal neuron is not
activated for it) - unless the dataset also labels concepts below it (ADE20K 'chair' beside
'armchair'): then its label means 'none of my finer labels', and with ``exclusive_negatives``
it trains that neuron with all defined children negative.

All of it is table lookups on whole label maps: no per-pixel Python. The buffers are not
persistent: the tree travels in checkpoints as data, not as weights.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from dsspn_cli.hierarchy.tables import IGNORE, MaskingTable


class DescentStep(NamedTuple):
    """One neuron's part in hierarchical inference (see ``MaskingTensors.descent``)."""

    neuron: int
    concept: int
    depth: int             # of its concept; a pixel meets the neurons of its path by depth
    children: int          # how many children it chooses among
    can_stop: bool         # a pixel may stay at its concept when no child scores high


class MaskingTensors(torch.nn.Module):
    def __init__(self, table: MaskingTable):
        super().__init__()
        self.table = table
        self.names = list(table.datasets)
        depth = max(table.max_depth, 1)
        num_children = max(len(c) for c in table.neuron_children)
        self.max_depth = depth
        self.neuron_depth = [table.depth[c] for c in table.neuron_concept]
        self.neuron_ancestors = [[table.concept_neuron[a] for a in table.ancestors(c)]
                                 for c in table.neuron_concept]
        children = torch.full((len(table.neuron_concept), num_children), IGNORE)
        for k, kids in enumerate(table.neuron_children):
            children[k, : len(kids)] = torch.tensor(kids)
        self._buffer("path_neuron", table.path_neuron)
        self._buffer("path_child", table.path_child)
        self._buffer("concept_neuron", table.concept_neuron)
        self._buffer("neuron_concept", table.neuron_concept)
        self.register_buffer("neuron_children", children, False)
        masks, exclusive, concept_label = [], [], []
        for name in self.names:
            data = table.datasets[name]
            mask = torch.zeros(len(table.neuron_concept), num_children, dtype=torch.bool)
            for k, row in enumerate(data.child_mask):
                mask[k, : len(row)] = torch.tensor(row, dtype=torch.bool)
            masks.append(mask)
            flags = torch.zeros(len(table.concepts), dtype=torch.bool)
            flags[data.exclusive] = True
            exclusive.append(flags)
            to_label = torch.full((len(table.concepts),), IGNORE)
            for concept, label_id in data.concept_label.items():
                to_label[concept] = label_id
            concept_label.append(to_label)
        self.register_buffer("child_mask", torch.stack(masks), False)      # D x K x J
        self.register_buffer("exclusive", torch.stack(exclusive), False)   # D x C
        self.register_buffer("concept_label", torch.stack(concept_label), False)  # D x C
        up = torch.stack(concept_label).clone()
        for d, name in enumerate(self.names):        # a concept read as its '-other' child
            for other, concept in table.datasets[name].other_of.items():
                up[d, concept] = up[d, other]
        for concept in range(len(table.concepts)):      # the nearest labelled concept above
            for ancestor in reversed(table.ancestors(concept)):
                up[:, concept] = torch.where(up[:, concept] >= 0, up[:, concept],
                                             up[:, ancestor])
        self.register_buffer("concept_label_up", up, False)   # D x C
        self._buffer("concept_at_level", table.levels())      # C x (depth + 1)
        self._exclusive = {name: frozenset(table.datasets[name].exclusive) for name in self.names}
        self._plans: dict[tuple, list[DescentStep]] = {}
        # The tables read in a vocabulary, built once per (kind, classes): 'concepts' a host
        # list (class_concepts), 'rows' and 'hedged' tensors (vocabulary, hedged_vocabulary).
        self._tables: dict[tuple, list[int] | torch.Tensor] = {}

    def _buffer(self, name: str, rows) -> None:
        self.register_buffer(name, torch.tensor(rows), False)

    def dataset_index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"dataset '{name}' is not in this tree "
                           f"({', '.join(self.names)})") from None

    def concepts_to_labels(self, concepts: torch.Tensor, dataset: str) -> torch.Tensor:
        """Concept map -> the dataset's label ids: a concept's own label (or, where the
        dataset's label of it trains its '-other' child, that label), else that of its
        nearest labelled ancestor (for maps cut with ``level``), else the ignore value."""
        labels = self.concept_label_up[self.dataset_index(dataset)][concepts]
        ignore = self.table.datasets[dataset].ignore_index
        return torch.where(labels >= 0, labels, torch.full_like(labels, ignore))

    # ------------------------------------------------------------------------------ training

    def active_neurons(self, target: torch.Tensor, dataset: int, fixed: bool = False,
                       exclusive_negatives: bool = True) -> torch.Tensor:
        """B x K: the neurons each image activates (paper 3.3); ``fixed``: every neuron whose
        children the dataset defines, for every image (the paper's 'DSSPN fixed')."""
        batch, num_neurons = target.shape[0], self.neuron_concept.numel()
        if fixed:
            used = self.child_mask[dataset].any(1)
            return used[None].expand(batch, num_neurons).clone()
        valid = target >= 0
        concepts = target.clamp(min=0)
        neurons = torch.where(valid[..., None], self.path_neuron[concepts], IGNORE)
        active = torch.zeros(batch, num_neurons + 1, dtype=torch.bool, device=target.device)
        active.scatter_(1, (neurons + 1).flatten(1), True)
        if exclusive_negatives:
            stops = valid & self.exclusive[dataset][concepts]
            own = torch.where(stops, self.concept_neuron[concepts], IGNORE)
            active.scatter_(1, (own + 1).flatten(1), True)
        return active[:, 1:]

    def neuron_targets(self, target: torch.Tensor, neuron: int, dataset: int,
                       exclusive_negatives: bool = True):
        """For the pixels of ``target`` (n x h x w): which count at this neuron, and the index
        of the child on their path (-1 for exclusive 'none of the children' pixels)."""
        valid = target >= 0
        concepts = target.clamp(min=0)
        level = self.neuron_depth[neuron]
        below = valid & (self.path_neuron[concepts, level] == neuron)
        child = torch.where(below, self.path_child[concepts, level], IGNORE)
        own = self.table.neuron_concept[neuron]
        if exclusive_negatives and own in self._exclusive[self.names[dataset]]:
            below = below | (valid & (target == own))
        return below, child

    # ------------------------------------------------------------------------------ inference

    def descent(self, dataset: str | None, level: int | None, softmax: bool,
                classes=None) -> list[DescentStep]:
        """The neurons that can move a pixel, parents first, for predictions in ``dataset``'s
        concepts (None: any concept) cut at depth ``level``, and, given ``classes`` (the
        concepts of each class, ``class_sets``), only the neurons above one of their
        concepts; decided from the tables alone, so that building the plan never waits on
        the device."""
        classes = None if classes is None else class_sets(classes)
        key = (dataset, level, softmax, classes)
        if key not in self._plans:
            self._plans[key] = _descent(self.table, dataset, level, softmax, classes)
        return self._plans[key]

    def vocabulary(self, classes) -> torch.Tensor:
        """Concept -> the index of the class (``class_sets``: the concepts of each; a concept
        id alone is a class of one) that holds the deepest concept at or above it, or -1
        ('other'): how a prediction is read in ``classes`` (built once per ``classes``, as
        the plans are)."""
        classes = class_sets(classes)
        key = ("rows", classes)
        if key not in self._tables:
            self._tables[key] = torch.tensor(self._rows(classes), dtype=torch.long)
        return self._tables[key].to(self.neuron_concept.device)

    def class_concepts(self, classes) -> list[int]:
        """Concept -> the deepest concept of ``classes`` at or above it, itself where none
        is (a host list: the flat head builds constant tables from it, also under
        export's trace): a concept map cut to what the classes tell apart."""
        key = ("concepts", class_sets(classes))
        if key not in self._tables:
            members = {c for concepts in key[1] for c in concepts}
            self._tables[key] = [self._deepest(concept, members) for concept
                                 in range(len(self.table.concepts))]
        return self._tables[key]

    def hedged_vocabulary(self, classes) -> torch.Tensor:
        """``vocabulary``, for hedged predictions: a concept above some class's concepts
        (where a pixel stopped, unsure which of them) is ``len(classes) + 1 + concept``,
        told apart from 'other' (-1) and from the classes (0, 1, ...)."""
        classes = class_sets(classes)
        key = ("hedged", classes)
        if key not in self._tables:
            above = above_classes(self.table, classes)
            rows = self._rows(classes)
            self._tables[key] = torch.tensor(
                [len(classes) + 1 + c if row < 0 and c in above else row
                 for c, row in enumerate(rows)], dtype=torch.long)
        return self._tables[key].to(self.neuron_concept.device)

    def _rows(self, classes: tuple[frozenset[int], ...]) -> list[int]:
        """``vocabulary``'s table as a host list."""
        position = {c: i for i, concepts in enumerate(classes) for c in concepts}
        return [position.get(d, IGNORE) for d in self.class_concepts(classes)]

    def _deepest(self, concept: int, members) -> int:
        for above in reversed(self.table.ancestors(concept) + [concept]):
            if above in members:
                return above
        return concept


def above_classes(table: MaskingTable, classes: tuple[frozenset[int], ...]) -> set[int]:
    """The concepts above some class's concepts: where a restricted descent has a decision
    to make, and where a hedged pixel stops unsure between classes."""
    return {a for concepts in classes for c in concepts for a in table.ancestors(c)}


def class_sets(classes) -> tuple[frozenset[int], ...]:
    """A vocabulary as the set of concept ids of each class; a concept id alone is a class of
    one (``(3, {4, 5})`` -> ``(frozenset({3}), frozenset({4, 5}))``)."""
    return tuple(frozenset(c) if isinstance(c, (set, frozenset, list, tuple))
                 else frozenset((int(c),)) for c in classes)


def _descent(table: MaskingTable, dataset: str | None, level: int | None,
             softmax: bool, classes: tuple[frozenset[int], ...] | None = None
             ) -> list[DescentStep]:
    data = table.datasets[dataset] if dataset is not None else None
    labelled = set()
    for t in table.datasets.values():
        labelled.update(t.concept_label)
    above = None if classes is None else above_classes(table, classes)
    steps = []
    for k, concept in enumerate(table.neuron_concept):
        if level is not None and table.depth[concept] >= level:
            continue
        if data is not None and not any(data.child_mask[k]):
            continue
        if above is not None and concept not in above:
            continue
        # BCE scores each child on its own, so 'none of them' can be read off; a softmax
        # always picks one.
        stops = concept in data.exclusive if data is not None else concept in labelled
        steps.append(DescentStep(k, concept, table.depth[concept],
                                 len(table.neuron_children[k]), stops and not softmax))
    return steps


__all__ = ["MaskingTensors", "DescentStep", "class_sets"]
