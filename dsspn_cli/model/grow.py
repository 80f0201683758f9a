"""Growing a trained model onto a larger tree (paper 3.4, 'updating and extending').

``grow_from`` loads a DSSPN trained on one tree into a DSSPN built from another, keeping every
neuron whose concept and ancestors are unchanged (it reads the same features); its prediction
rows (``predict`` and the skip readout's ``direct``) are kept for the children it still has.
New neurons keep their fresh initialisation.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GrowReport:
    kept: list[str] = field(default_factory=list)      # concept, ancestors, children unchanged
    extended: list[str] = field(default_factory=list)  # same concept and ancestors, other children
    new: list[str] = field(default_factory=list)


def neuron_signature(table, k: int) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """A neuron's concept, its ancestors (whose features it reads, in order) and its
    ordered children."""
    concept = table.neuron_concept[k]
    return (table.concepts[concept],
            tuple(table.concepts[a] for a in table.ancestors(concept)),
            tuple(table.concepts[c] for c in table.neuron_children[k]))


def grow_from(model, state_dict: dict, old_table) -> GrowReport:
    """Load ``state_dict`` (of a DSSPN model on ``old_table``) into ``model`` (on a new
    table); everything outside the neurons (backbone, transition) is loaded as it is."""
    new_table = model.masking.table
    old = {}
    for k in range(len(old_table.neuron_concept)):
        concept, ancestors, children = neuron_signature(old_table, k)
        old[(concept, ancestors)] = (k, children)
    own = model.state_dict()
    mapped, report = {}, GrowReport()
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
            if name.startswith(("predict.", "direct.")):     # one row per child
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


__all__ = ["grow_from", "GrowReport", "neuron_signature"]
