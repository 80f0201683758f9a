"""Naming classes in a model's concept tree: one mapping of any vocabulary onto the tree.

A class (``--classes`` text, a label of a label-set file, a held-out dataset's label) maps to
a set of the tree's concepts, by the first of these that applies:

1. **same**, by name: the name of a concept (``person``, COCO's group ``outdoor-things``, a
   ``-other`` concept), also in another case or with ``_`` for spaces, or a label name of a
   dataset of the tree (Cityscapes' ``vegetation``);
2. **same**, by synset: a concept's synset, written as a synset (``car.n.01``, or any other
   name of it: ``auto.n.01``) or as any word of it (``automobile``, ``edifice``);
3. **below**: the highest concepts of the tree that WordNet puts below the synset, over all
   of their hypernym paths, instance hypernyms included (``canine`` -> dog; ``motor vehicle``
   -> car, motorcycle, truck: a union). A concept whose ancestor in the tree is taken goes
   with it; a concept without a synset (COCO's groups) is never reached by WordNet and is
   covered through its children: when all its children are taken, it is named instead;
4. **coarser**: the nearest concept of the tree above the synset on its hypernym paths, the
   deepest one where paths meet different concepts (``poodle`` -> dog: the model knows
   nothing finer); never the root, which would be everything;
5. **none**: nothing of the tree at, below or above it; suggestions come from WordNet's
   neighbours of the word (``people`` -> person, its members) and from spelling.

A word with several noun senses takes the sense that reaches the tree. Where several do: a
concept's synset named by the word itself first (``cloud``: cloud.n.02, the concept clouds;
``soil``: soil.n.02, not land.n.02 of which 'soil' is a synonym), then senses that name or
cover concepts (same, below), then senses only finer than a concept (coarser: ``dog`` is
dog.n.01, not frump.n.01, a person). Among the senses of the first of these that has any,
senses giving the same concepts are one, and a sense whose concepts hold those of all the
others is taken (``window``: window-stuff holds windowpane). Where senses remain that give
different concepts, the class names none and one line lists them to choose a synset
(``bike``: bicycle.n.01 or motorcycle.n.01; ``machine``: machine.n.01 or car.n.01).

A label of a label-set file with a ``synset`` maps by it; one without is named by its name as
above; one that neither places, but that has a ``parent``, maps to that parent, coarser.

Two classes on one concept cannot be told apart, with one exception: a class naming the
concept itself ('same', or a finer WordNet class among unions) takes it from the unions of
the others (``motor vehicle,car``: car pixels are car, motor vehicle keeps truck and
motorcycle). ``map_vocabulary(strict=True)`` (``--classes``, ``--labelset``) stops at the
first problem in one line naming the classes and the fix; ``strict=False`` (evaluation)
lists the problems instead.

This module needs WordNet only for classes that are not names of the tree; it never imports
torch.
"""

from __future__ import annotations

import difflib
import weakref
from dataclasses import dataclass, replace
from typing import Iterable, NamedTuple, Sequence

from dsspn_cli.errors import UserError, one_line
from dsspn_cli.hierarchy.labelset import Label, LabelSet, is_synset_name

HOWS = ("same", "below", "coarser", "none")
# WordNet relations whose neighbours are suggested for a class that names nothing.
NEIGHBOURS = ("member_meronyms", "part_meronyms", "substance_meronyms", "member_holonyms",
              "part_holonyms", "substance_holonyms", "hyponyms", "instance_hyponyms",
              "hypernyms", "instance_hypernyms")


@dataclass(frozen=True)
class ClassMapping:
    """One class mapped onto the tree."""

    name: str                                  # the class as given
    how: str                                   # same | below | coarser | none
    concepts: frozenset[str] = frozenset()     # concept names; empty for 'none'
    synset: str | None = None                  # the WordNet sense it was read as
    note: str = ""                             # how it matched, or why not, in words
    choices: tuple[str, ...] = ()              # none: synsets (or concepts) to choose from
    suggestions: tuple[str, ...] = ()          # none: concepts it may mean
    label_id: int | None = None                # a label set's class: its id

    def ordered(self, tree) -> list[str]:
        """The concepts in concept-id order."""
        return sorted(self.concepts, key=tree.id)

    def concept_ids(self, tree) -> frozenset[int]:
        return frozenset(tree.id(c) for c in self.concepts)

    def to_json(self, tree) -> dict:
        doc = {"name": self.name}
        if self.label_id is not None:
            doc["id"] = self.label_id
        doc.update({"how": self.how, "synset": self.synset,
                    "concepts": [{"name": c, "id": tree.id(c)} for c in self.ordered(tree)],
                    "note": self.note})
        if self.choices:
            doc["choices"] = list(self.choices)
        if self.suggestions:
            doc["suggestions"] = list(self.suggestions)
        return doc


@dataclass(frozen=True)
class VocabularyProblem:
    """A class the model cannot name ('unnamed') or classes it cannot tell apart ('shared')."""

    kind: str
    classes: tuple[str, ...]
    concepts: tuple[str, ...]
    message: str                               # one line: the classes, the problem, the fix

    def to_json(self) -> dict:
        return {"kind": self.kind, "classes": list(self.classes),
                "concepts": list(self.concepts), "message": self.message}


@dataclass(frozen=True)
class Vocabulary:
    """Classes in order, each with its concepts (disjoint where no problem says otherwise)."""

    classes: tuple[ClassMapping, ...]
    problems: tuple[VocabularyProblem, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    @property
    def concept_sets(self) -> tuple[frozenset[str], ...]:
        return tuple(c.concepts for c in self.classes)

    def concept_ids(self, tree) -> tuple[frozenset[int], ...]:
        """Per class, its concepts' ids: what a restricted prediction takes."""
        return tuple(c.concept_ids(tree) for c in self.classes)

    def to_json(self, tree) -> dict:
        return {"tree": tree.source or None,
                "classes": [c.to_json(tree) for c in self.classes],
                "problems": [p.to_json() for p in self.problems]}


# ------------------------------------------------------------------------------ the index


class _Index:
    """What naming needs of one tree, built once per tree (and WordNet reader)."""

    def __init__(self, tree, wn=None):
        self.tree = tree
        self._wn = wn
        self.by_synset: dict[str, str] = tree.by_synset()
        self.by_lower = {" ".join(n.replace("_", " ").split()).lower(): n for n in tree.names}
        self._labels: dict[str, tuple[str, str]] | None = None
        self._closures: dict[str, frozenset[str]] | None = None
        self._canonical: dict[str, str] = {}
        self._words: dict[str, str] | None = None

    @property
    def wn(self):
        if self._wn is None:
            from dsspn_cli.hierarchy.wordnet import wordnet

            self._wn = wordnet()
        return self._wn

    @property
    def labels(self) -> dict[str, tuple[str, str]]:
        """Label names of the tree's datasets, lower case -> (concept, dataset)."""
        if self._labels is None:
            self._labels = {}
            for name, value in self.tree.label_names().items():
                self._labels.setdefault(_normal(name), value)
        return self._labels

    @property
    def closures(self) -> dict[str, frozenset[str]]:
        """Concept -> every proper WordNet hypernym of its synset, over all paths."""
        if self._closures is None:
            closures = {}
            for synset, concept in self.by_synset.items():
                found = self.synset(synset)
                if found is None:             # a hand-written tree's unknown synset
                    continue
                self._canonical.setdefault(found.name(), concept)
                above = {s.name() for path in found.hypernym_paths() for s in path}
                above.discard(found.name())
                closures[concept] = frozenset(above)
            self._closures = closures
        return self._closures

    @property
    def canonical(self) -> dict[str, str]:
        """Synset -> concept, each synset under its own name ('auto.n.01' is car.n.01)."""
        _ = self.closures
        return self._canonical

    @property
    def words(self) -> dict[str, str]:
        """Every lemma of the tree's synsets (lower case, spaces) -> its concept: for
        spelling suggestions."""
        if self._words is None:
            self._words = {}
            for synset, concept in sorted(self.by_synset.items()):
                found = self.synset(synset)
                for lemma in found.lemma_names() if found is not None else ():
                    self._words.setdefault(lemma.replace("_", " ").lower(), concept)
        return self._words

    def synset(self, name: str):
        """The synset of that name, or None (unknown, or not a noun)."""
        from nltk.corpus.reader.wordnet import WordNetError

        try:
            found = self.wn.synset(name)
        except (WordNetError, ValueError, AttributeError):
            return None
        return found if found is not None and found.pos() == "n" else None

    def senses(self, key: str) -> list:
        """The noun senses of a word ('motor vehicle', 'T-shirt', 'dogs'), in WordNet's
        order (most frequent first)."""
        for form in dict.fromkeys([key.replace(" ", "_"), key.replace(" ", "_").replace(
                "-", "_")]):
            try:
                found = self.wn.synsets(form, pos="n")
            except (ValueError, AttributeError):
                found = []
            if found:
                return found
        return []


_INDEXES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _index(tree, wn=None) -> _Index:
    index = _INDEXES.get(tree)
    if index is None or (wn is not None and index._wn is not None and index._wn is not wn):
        index = _INDEXES[tree] = _Index(tree, wn)
    elif wn is not None and index._wn is None:
        index._wn = wn
    return index


def _normal(text: str) -> str:
    return " ".join(text.replace("_", " ").split()).lower()


# ------------------------------------------------------------------------------ one synset


@dataclass(frozen=True)
class _Reach:
    """Where one synset lands in the tree."""

    how: str
    concepts: frozenset[str] = frozenset()
    ties: tuple[str, ...] = ()          # coarser: equally near concepts to choose from


def _highest(index: _Index, found: Iterable[str]) -> frozenset[str]:
    """The concepts of ``found`` with no ancestor among them; then every concept without a
    synset whose children are all taken stands for them (repeatedly, up the tree)."""
    tree = index.tree
    found = set(found)
    top = {c for c in found if not found.intersection(tree.ancestors(c))}
    changed = True
    while changed:
        changed = False
        for parent in {tree.parent(c) for c in top} - {None}:
            children = tree.children(parent)
            if parent != tree.root and not tree.node(parent).get("synset") and \
                    all(c in top for c in children):
                top.difference_update(children)
                top.add(parent)
                changed = True
    return frozenset(top)


def _reach(index: _Index, synset) -> _Reach:
    """same, else below, else coarser, else none, for one noun synset."""
    tree, name = index.tree, synset.name()
    if name in index.canonical:
        return _Reach("same", frozenset({index.canonical[name]}))
    below = [c for c, above in index.closures.items() if name in above]
    if below:
        return _Reach("below", _highest(index, below))
    nearest = set()
    for path in synset.hypernym_paths():            # root first, the synset last
        for above in reversed(path[:-1]):
            concept = index.canonical.get(above.name())
            if concept is not None and concept != tree.root:
                nearest.add(concept)
                break
    # Where paths meet concepts of one branch, the deeper one is nearer.
    nearest = {c for c in nearest if not any(c in tree.ancestors(d) for d in nearest)}
    if not nearest:
        return _Reach("none")
    deepest = max(tree.depth(c) for c in nearest)
    ties = sorted((c for c in nearest if tree.depth(c) == deepest), key=tree.id)
    if len(ties) == 1:
        return _Reach("coarser", frozenset(ties))
    return _Reach("coarser", frozenset(ties), tuple(ties))


def _covers(index: _Index, outer: frozenset[str], inner: frozenset[str]) -> bool:
    """Whether every concept of ``inner`` is one of ``outer`` or below one of them."""
    return all(c in outer or outer.intersection(index.tree.ancestors(c)) for c in inner)


def _listed(index: _Index, concepts: Iterable[str], most: int = 4) -> str:
    ordered = sorted(concepts, key=index.tree.id)
    more = f" and {len(ordered) - most} more" if len(ordered) > most else ""
    return ", ".join(ordered[:most]) + more


def _from_synset(index: _Index, text: str, synset, word: str = "") -> ClassMapping:
    reach = _reach(index, synset)
    name = synset.name()
    if reach.ties:
        return ClassMapping(text, "none", synset=name, choices=reach.ties, note=(
            f"{name} is finer than the tree, a kind of {' and '.join(reach.ties)} equally"))
    if reach.how == "same":
        concept = next(iter(reach.concepts))
        note = (f"'{word}' names {name}, the concept '{concept}'" if word else
                f"{name} is the concept '{concept}'")
        return ClassMapping(text, "same", reach.concepts, name, note)
    if reach.how == "below":
        return ClassMapping(text, "below", reach.concepts, name, (
            f"WordNet puts {_listed(index, reach.concepts)} below {name}"))
    if reach.how == "coarser":
        concept = next(iter(reach.concepts))
        return ClassMapping(text, "coarser", reach.concepts, name, (
            f"{name} is a kind of {concept}: the model knows nothing finer"))
    return ClassMapping(text, "none", synset=name, note=(
        f"WordNet's {name} ({synset.definition()}) has no concept of the tree at, below or "
        "above it"))


def _head(synset_name: str) -> str:
    """The word a synset is named by: 'cloud' for cloud.n.02."""
    return _normal(synset_name.rsplit(".", 2)[0])


def _by_head(index: _Index, text: str, key: str) -> ClassMapping | None:
    """A word that names synsets of the tree itself (cloud: cloud.n.02, the concept
    'clouds'), without WordNet: the first rule for words, before other senses."""
    found = [(synset, concept) for synset, concept in sorted(
        index.by_synset.items(), key=lambda item: index.tree.id(item[1]))
        if _head(synset) == key and concept != index.tree.root]
    if not found:
        return None
    return _choose(index, text, key, [(synset, ClassMapping(
        text, "same", frozenset({concept}), synset,
        f"'{key}' names {synset}, the concept '{concept}'")) for synset, concept in found])


def _choose(index: _Index, text: str, key: str, senses: list[tuple[str, ClassMapping]]
            ) -> ClassMapping:
    """One of several senses, each (synset, mapping): the one, where they give the same
    concepts or one holds the concepts of all others; else none, with them to choose."""
    distinct: dict[frozenset[str], tuple[str, ClassMapping]] = {}
    for synset, mapping in senses:
        distinct.setdefault(mapping.concepts if not mapping.choices else
                            frozenset(mapping.choices), (synset, mapping))
    if len(distinct) == 1:
        return next(iter(distinct.values()))[1]
    holding = [m for concepts, (_, m) in distinct.items() if not m.choices and all(
        _covers(index, concepts, other) for other in distinct)]
    if holding:
        return holding[0]
    described = "; ".join(f"{synset} ({m.how}: {_listed(index, m.concepts or m.choices, 3)})"
                          for synset, m in distinct.values())
    return ClassMapping(text, "none", choices=tuple(s for s, _ in distinct.values()), note=(
        f"'{key}' has {len(distinct)} senses that reach the tree: {described}"))


def _from_word(index: _Index, text: str, key: str) -> ClassMapping | None:
    """A WordNet word: the sense that reaches the tree; None if WordNet has no such noun.
    Where several do: a concept's synset the word itself names, then senses that name or
    cover concepts (same, below), then senses finer than one (coarser)."""
    senses = index.senses(key)
    if not senses:
        return None
    mapped = [(s, _from_synset(index, text, s, key)) for s in senses]
    reaching = [(s, m) for s, m in mapped if m.how != "none" or m.choices]
    if not reaching:
        if len(senses) == 1:
            return mapped[0][1]
        shown = ", ".join(s.name() for s in senses[:3]) + (", ..." if len(senses) > 3 else "")
        return ClassMapping(text, "none", note=(
            f"none of WordNet's {len(senses)} senses of '{key}' ({shown}) has a concept of "
            "the tree at, below or above it"))
    forms = {key, _normal(index.wn.morphy(key.replace(" ", "_"), "n") or key)}
    best = ([(s, m) for s, m in reaching if m.how == "same" and _head(s.name()) in forms]
            or [(s, m) for s, m in reaching if m.how in ("same", "below")] or reaching)
    chosen = _choose(index, text, key, [(s.name(), m) for s, m in best])
    others = [s.name() for s, m in reaching if m.synset != chosen.synset]
    if others and chosen.concepts:
        chosen = replace(chosen, note=chosen.note + f" (other senses: {', '.join(others[:3])}"
                         + (", ..." if len(others) > 3 else "") + ")")
    return chosen


# ------------------------------------------------------------------------------ one class


def map_class(tree, wn, text: str) -> ClassMapping:
    """Map one class, given as text (a concept's name, a synset, a WordNet word, a label
    name of a dataset of the tree) onto the tree. ``wn``: the WordNet reader, or None to
    load it only if the text is not a name of the tree."""
    return _map_text(_index(tree, wn), text)


def _map_text(index: _Index, text: str) -> ClassMapping:
    tree = index.tree
    text = text.strip()
    if text in tree:
        return ClassMapping(text, "same", frozenset({text}), tree.node(text).get("synset"),
                            f"the concept '{text}'")
    if is_synset_name(text):
        if text in index.by_synset:
            concept = index.by_synset[text]
            return ClassMapping(text, "same", frozenset({concept}), text,
                                f"{text} is the concept '{concept}'")
        synset = index.synset(text)
        if synset is None:
            return _unnamed(index, text, f"'{text}' is not a WordNet 3.0 noun synset")
        return _from_synset(index, text, synset)
    key = _normal(text)
    if key in index.by_lower:
        concept = index.by_lower[key]
        return ClassMapping(text, "same", frozenset({concept}), tree.node(concept).get(
            "synset"), f"the concept '{concept}'")
    if key in index.labels:
        concept, dataset = index.labels[key]
        return ClassMapping(text, "same", frozenset({concept}), tree.node(concept).get(
            "synset"), f"{dataset} label '{key}' is the concept '{concept}'")
    named = _by_head(index, text, key)          # no WordNet needed
    if named is not None:
        return named
    try:
        mapped = _from_word(index, text, key)
    except UserError as exc:          # no WordNet here
        return _unnamed(index, text, f"only the tree's own names are known without "
                        f"WordNet ({exc})")
    if mapped is None:
        return _unnamed(index, text, f"WordNet has no noun '{key}'")
    if mapped.how == "none" and not mapped.choices:
        return _unnamed(index, text, mapped.note, mapped.synset)
    return mapped


def _unnamed(index: _Index, text: str, why: str, synset: str | None = None) -> ClassMapping:
    return ClassMapping(text, "none", synset=synset, note=why,
                        suggestions=tuple(suggest(index, text)))


def suggest(index: _Index, text: str, most: int = 3) -> list[str]:
    """Concepts a class that names nothing may mean: WordNet's neighbours of its senses
    first (members, parts, wholes, kinds; then theirs), then names spelled alike."""
    found: list[str] = []
    key = _normal(text)
    try:
        senses = ([index.synset(text)] if is_synset_name(text) else index.senses(key))
    except UserError:               # no WordNet: spelling only
        senses = []
    frontier = [s for s in senses if s is not None]
    seen = {s.name() for s in frontier}
    for _ in range(2):
        following = []
        for synset in frontier:
            related = [n for relation in NEIGHBOURS for n in getattr(synset, relation)()]
            related += [form.synset() for lemma in synset.lemmas()
                        for form in lemma.derivationally_related_forms()
                        if form.synset().pos() == "n"]
            for neighbour in related:
                if neighbour.name() in seen:
                    continue
                seen.add(neighbour.name())
                following.append(neighbour)
                concept = index.canonical.get(neighbour.name())
                if concept is not None and concept != index.tree.root and concept not in found:
                    found.append(concept)
        if found:
            break
        frontier = following
    names = list(index.by_lower) + list(index.labels)
    try:
        names += list(index.words)
    except UserError:
        pass
    for near in difflib.get_close_matches(key, names, n=6, cutoff=0.7):
        concept = index.by_lower.get(near) or (index.labels[near][0] if near in index.labels
                                               else index.words[near])
        if concept not in found:
            found.append(concept)
    return found[:most]


def _map_label(index: _Index, label: Label) -> ClassMapping:
    """A label of a label-set file: by its synset, else by its name; a label that neither
    places but that has a parent maps to the parent, coarser."""
    if label.synset and label.synset in index.by_synset:        # no WordNet needed
        concept = index.by_synset[label.synset]
        mapped = ClassMapping(label.name, "same", frozenset({concept}), label.synset,
                              f"{label.synset} is the concept '{concept}'")
    elif label.synset:
        synset = index.synset(label.synset)
        if synset is None:
            mapped = _unnamed(index, label.name, f"'{label.synset}' is not a WordNet 3.0 noun "
                              "synset")
        else:
            mapped = _from_synset(index, label.name, synset)
            if mapped.how == "none" and not mapped.choices:
                mapped = _unnamed(index, label.name, mapped.note, mapped.synset)
    else:
        mapped = _map_text(index, label.name)
    if not mapped.concepts and label.parent:
        parent = _map_text(index, label.parent)
        if len(parent.concepts) == 1:
            concept = next(iter(parent.concepts))
            mapped = ClassMapping(label.name, "coarser", parent.concepts, parent.synset,
                                  f"its parent '{label.parent}' is '{concept}': the model "
                                  "knows nothing finer")
    return replace(mapped, label_id=label.id)


# ------------------------------------------------------------------------------ vocabularies


def map_vocabulary(tree, classes: Sequence[str | Label], wn=None, strict: bool = True,
                   source: str = "--classes") -> Vocabulary:
    """Map classes (texts, or labels of a label set) onto the tree, in order.

    ``strict``: the first class that names nothing, or the first concept two classes
    claim, is a UserError of one line naming the classes and the fix (``--classes``,
    ``--labelset``). Otherwise they are listed in ``Vocabulary.problems`` (evaluation).
    ``source`` says where the classes come from in messages: ``--classes`` or a file.
    ``wn``: the WordNet reader, or None to load it only when a class needs it."""
    index = _index(tree, wn)
    mappings = [_map_label(index, c) if isinstance(c, Label) else _map_text(index, c)
                for c in classes]
    where = [_where(source, c) for c in classes]
    labels = any(isinstance(c, Label) for c in classes)
    problems = [VocabularyProblem("unnamed", (m.name,), (), one_line(
        _unnamed_message(index, w, m, source, labels)))
        for m, w in zip(mappings, where) if not m.concepts]
    mappings, shared = _share(index, mappings, where, source, labels)
    problems += shared
    if strict and problems:
        more = len(problems) - 1
        raise UserError(one_line(problems[0].message + (
            f" ({more} more problem{'s' if more > 1 else ''}: 'dsspn hierarchy map' lists "
            "them all)" if more else "")))
    return Vocabulary(tuple(mappings), tuple(problems))


def everything_else(labelset: LabelSet) -> Label | None:
    """The label set's class marked ``other: true`` (VOC's background): not a concept to map
    but every pixel no other class takes, MSeg's way."""
    found = [label for label in labelset.mapped_labels if label.extra.get("other") is True]
    if len(found) > 1:
        raise UserError(f"{labelset.source}: labels {', '.join(repr(o.name) for o in found)} "
                        "are all marked 'other: true'; mark one class as everything else")
    return found[0] if found else None


def map_labelset(tree, labelset: LabelSet, wn=None, strict: bool = True,
                 without_other: bool = False) -> Vocabulary:
    """The labels of a label set to predict or score (not void, really annotated);
    ``without_other``: all but its everything-else class (``everything_else``), which the
    caller gives the pixels of no other class."""
    labels = labelset.mapped_labels
    if without_other:
        other = everything_else(labelset)
        labels = [label for label in labels if label is not other]
    if not labels:
        raise UserError(f"{labelset.source}: the label set has no labels to map (all are "
                        "ignored or unused)")
    return map_vocabulary(tree, labels, wn, strict, source=str(labelset.source))


class ChosenVocabulary(NamedTuple):
    """The classes given by ``--classes`` or by a label set (``vocabulary_for``)."""

    vocabulary: Vocabulary
    labelset: LabelSet | None           # the label set, None for --classes
    other: Label | None                 # its everything-else class (``everything_else``)

    @property
    def source(self) -> str:
        """Where the classes come from: ``--classes`` or the label set."""
        return "--classes" if self.labelset is None else str(self.labelset.source)


def vocabulary_for(tree, classes: str | None = None, labelset=None, wn=None,
                   strict: bool = True) -> ChosenVocabulary:
    """The vocabulary of ``--classes A,B,...`` (comma-separated, each stripped), or of a
    label set (a built-in name or a file) without its everything-else class, mapped onto
    ``tree`` (``map_vocabulary``, ``map_labelset``); give one of them. ``strict``: as for
    ``map_vocabulary``."""
    if classes is not None:
        wanted = [c.strip() for c in classes.split(",") if c.strip()]
        if not wanted:
            raise UserError(f"--classes {classes!r}: name one class or more, like person,sky")
        return ChosenVocabulary(map_vocabulary(tree, wanted, wn, strict=strict), None, None)
    from dsspn_cli.hierarchy.labelset import load_labelset

    chosen = load_labelset(str(labelset))
    # Its everything-else class (VOC's background) is every pixel of no other class.
    other = everything_else(chosen)
    vocabulary = map_labelset(tree, chosen, wn, strict=strict, without_other=True)
    return ChosenVocabulary(vocabulary, chosen, other)


def _where(source: str, item) -> str:
    if isinstance(item, Label):
        return f"{source}: label '{item.name}' (id {item.id})"
    return f"{source} {item.strip()}".strip()


def _unnamed_message(index: _Index, where: str, mapping: ClassMapping, source: str,
                     labels: bool) -> str:
    if mapping.choices and mapping.choices[0] in index.tree:      # equally near concepts
        fix = ("give the label a 'parent:' naming the one you mean" if labels else
               f"name the one you mean ({source} {mapping.choices[0]})")
        return f"{where}: {mapping.note}; {fix}"
    if mapping.choices:                                           # several senses
        fix = ("give the label the 'synset:' you mean" if labels else
               f"name the one you mean by its synset ({source} {mapping.choices[0]})")
        return f"{where}: {mapping.note}; {fix}"
    hint = (f"; did you mean {', '.join(map(repr, mapping.suggestions))}?"
            if mapping.suggestions else "; 'dsspn hierarchy show' lists the concepts")
    fix = ("give the label a 'synset:' or a 'parent:' in the tree" if labels else
           "give a concept's name, a synset like car.n.01 or a WordNet noun")
    return (f"{where}: no concept '{mapping.name}' in this tree: {mapping.note} ({fix})"
            f"{hint}")


def _share(index: _Index, mappings: list[ClassMapping], where: list[str], source: str,
           labels: bool) -> tuple[list[ClassMapping], list[VocabularyProblem]]:
    """Concepts claimed by several classes: the class naming the concept itself takes it
    from unions; otherwise the classes cannot be told apart (a problem)."""
    claims: dict[str, list[int]] = {}
    for i, mapping in enumerate(mappings):
        for concept in mapping.concepts:
            claims.setdefault(concept, []).append(i)
    problems: list[VocabularyProblem] = []
    taken: dict[int, dict[str, str]] = {}          # class -> {concept: the class taking it}
    clashes: dict[tuple[int, ...], list[str]] = {}
    for concept in sorted(claims, key=index.tree.id):
        owners = claims[concept]
        if len(owners) < 2:
            continue
        finest = [owners[k] for k in _finest(index, [mappings[i] for i in owners])]
        if len(finest) > 1:
            clashes.setdefault(tuple(finest), []).append(concept)
        for i in owners:
            if i not in finest:
                taken.setdefault(i, {})[concept] = " and ".join(
                    f"'{mappings[j].name}'" for j in finest)
    result = list(mappings)
    for i, lost in taken.items():
        kept = mappings[i].concepts - set(lost)
        by = ", ".join(f"{c} goes to {n}" for c, n in sorted(
            lost.items(), key=lambda item: index.tree.id(item[0])))
        if kept:
            result[i] = replace(mappings[i], concepts=kept,
                                note=mappings[i].note + f" ({by})")
        else:
            problems.append(VocabularyProblem("shared", (mappings[i].name,), tuple(lost),
                                              one_line(
                f"{where[i]}: every concept it covers ({_listed(index, lost)}) is named by a "
                f"finer class, so nothing is left to it; "
                + ("remove the label" if labels else
                   "leave it out, or leave out the finer classes"))))
    for owners, concepts in clashes.items():
        names = [mappings[i].name for i in owners]
        what = "; ".join(f"{mappings[i].name}: {mappings[i].how}" for i in owners)
        both = "both" if len(owners) == 2 else "all"
        if not labels:
            start = f"{source} {','.join(names)}".strip()
            fix = "keep one of them, or name a finer concept for one"
        else:
            start = f"{source}: labels " + ", ".join(
                f"'{mappings[i].name}'" + (f" (id {mappings[i].label_id})"
                                           if mappings[i].label_id is not None else "")
                for i in owners)
            fix = "give one of them another 'synset:', or remove it"
        if len(set(names)) == 1:
            message = f"{start}: '{names[0]}' is named twice; name each class once"
        else:
            message = (f"{start}: {both} name {_listed(index, concepts)} ({what}), so the "
                       f"model cannot tell them apart; {fix}")
        problems.append(VocabularyProblem("shared", tuple(names), tuple(concepts),
                                          one_line(message)))
    return result, problems


def _finest(index: _Index, claimants: list[ClassMapping]) -> list[int]:
    """Which of several classes claiming one concept keep it: those naming it ('same')
    against unions ('below'), or the union whose synset WordNet puts below every other's;
    all of them when a 'coarser' class is among them (it never takes a concept from
    another, nor gives it up). One left takes the concept; several cannot be told apart."""
    everyone = list(range(len(claimants)))
    if any(m.how == "coarser" for m in claimants):
        return everyone
    same = [i for i, m in enumerate(claimants) if m.how == "same"]
    if same:
        return same
    for i, mapping in enumerate(claimants):
        synset = index.synset(mapping.synset) if mapping.synset else None
        if synset is None:
            continue
        above = {s.name() for path in synset.hypernym_paths() for s in path[:-1]}
        if all(m.synset in above for j, m in enumerate(claimants) if j != i):
            return [i]
    return everyone


# ------------------------------------------------------------------------------ datasets


def dataset_labelset(tree, dataset: str) -> LabelSet | None:
    """The label set the tree names for a dataset (``labelset_of``: a file beside the tree
    file first, else from the current folder); None when it cannot be read."""
    from dsspn_cli.hierarchy.tree import labelset_of

    try:
        return labelset_of(tree.source or None, tree.datasets.get(dataset) or {}, dataset)
    except UserError:
        return None


def label_display_names(tree, dataset: str, labelset: LabelSet | None = None
                        ) -> dict[int, str]:
    """A dataset's label id -> its name to show: the readable one where the label set has it
    (Mapillary's 'Road'), else the label's name; from ``labelset``, by default the one the
    tree names (``dataset_labelset``). Empty when it cannot be read."""
    if labelset is None:
        labelset = dataset_labelset(tree, dataset)
    if labelset is None:
        return {}
    return {label.id: str(label.extra.get("readable") or label.name)
            for label in labelset.labels}


def dataset_labels(tree, dataset: str) -> dict[str, list[str]]:
    """A dataset's own label names per concept ('road' -> ['roadway']), in the order of
    their label ids (``label_display_names``; the label id where it cannot be read)."""
    names = label_display_names(tree, dataset)
    found: dict[str, list[str]] = {}
    for label_id, concept in sorted(tree.label_map(dataset).items()):
        found.setdefault(concept, []).append(names.get(label_id, f"label {label_id}"))
    return found


def labelled(concept: str, labels: Sequence[str]) -> str:
    """A dataset's label names with the concept beside them: 'roadway (road)'; the concept
    alone where the names are its own."""
    names = list(dict.fromkeys(labels))
    if not names or {n.lower() for n in names} == {concept.lower()}:
        return concept
    return f"{', '.join(names)} ({concept})"


__all__ = ["ClassMapping", "Vocabulary", "VocabularyProblem", "HOWS", "map_class",
           "map_vocabulary", "map_labelset", "everything_else", "ChosenVocabulary",
           "vocabulary_for", "dataset_labelset", "label_display_names", "dataset_labels",
           "labelled"]
