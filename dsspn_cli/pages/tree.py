"""The concept tree as one HTML page (``dsspn hierarchy show --format html``): folded to a
depth, unfolded and folded by click, searchable by name, synset and dataset label, each
concept with its synset, WordNet definition, labels per dataset and neuron. The page is
``tree.html`` with ``common.js``, ``tree.js`` and the stylesheets inlined (``build``)."""

from __future__ import annotations

from dsspn_cli.errors import UserError
from dsspn_cli.pages import build

DEFAULT_FOLD = 3        # depth the page opens at: COCO's 27 super-categories in the shipped tree


def definitions(tree, wordnet_dir=None) -> tuple[dict[str, str], str | None]:
    """Synset -> WordNet definition for every synset of the tree, and None; or no definitions
    and the reason when WordNet cannot be found (the page says it)."""
    from dsspn_cli.hierarchy.wordnet import wordnet

    try:
        wn = wordnet(wordnet_dir)
    except UserError as exc:
        return {}, str(exc)
    found = {}
    for name in tree.names:
        synset = tree.node(name).get("synset")
        if synset and synset not in found:
            try:
                found[synset] = wn.synset(synset).definition()
            except Exception:       # a synset WordNet 3.0 lacks (an edited tree): no text
                continue
    return found, None


def tree_data(tree, fold: int | None = None, wordnet_dir=None, title: str = "",
              keep: set[str] | None = None) -> dict:
    """What the page shows, as plain data: the datasets with their colours, and per concept
    (in concept-id order, a parent before its children) its id, name, parent (its place in
    this list), synset, kind, definition, labels per dataset (id and the dataset's own name)
    and neuron number. ``keep``: only these concepts (each with its parent), ids unchanged."""
    from dsspn_cli.hierarchy.render import DATASET_COLOURS
    from dsspn_cli.hierarchy.vocabulary import label_display_names

    texts, missing = definitions(tree, wordnet_dir)
    neurons = {name: i for i, name in enumerate(tree.neurons)}     # the model's neuron order
    label_names = {dataset: label_display_names(tree, dataset) for dataset in tree.datasets}
    shown = [name for name in tree.names if keep is None or name in keep]
    place = {name: i for i, name in enumerate(shown)}
    concepts = []
    for name in shown:
        node = tree.node(name)
        parent = tree.parent(name)
        labels = {}
        for dataset, ids in tree.labels(name).items():
            named = label_names.get(dataset, {})
            labels[dataset] = [[int(i), str(named.get(i, f"label {i}"))] for i in ids]
        synset = node.get("synset")
        concepts.append({
            "id": tree.id(name),
            "name": name,
            "parent": place[parent] if parent is not None else None,
            "synset": synset,
            "kind": node.get("kind") or "concept",
            "definition": texts.get(synset) if synset else None,
            "labels": labels,
            "neuron": neurons.get(name),
        })
    datasets = [{"name": name, "title": str((info or {}).get("title") or name),
                 "colour": DATASET_COLOURS[i % len(DATASET_COLOURS)]}
                for i, (name, info) in enumerate(tree.datasets.items())]
    return {
        "title": title,
        "fold": DEFAULT_FOLD if fold is None else fold,
        "datasets": datasets,
        "concepts": concepts,
        "wordnet": missing is None,
        "wordnetProblem": missing,
    }


def tree_page(tree, fold: int | None = None, wordnet_dir=None, title: str = "",
              keep: set[str] | None = None) -> str:
    """The self-contained HTML page of ``tree`` (of its concepts in ``keep``), opened folded
    at depth ``fold``."""
    return build("tree.html", tree_data(tree, fold, wordnet_dir, title, keep))


__all__ = ["tree_page", "tree_data", "definitions", "DEFAULT_FOLD"]
