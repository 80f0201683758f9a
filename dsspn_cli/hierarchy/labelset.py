"""Label sets: the classes one dataset annotates, with their ids and their WordNet meaning.

A label set is a YAML file (the built-in ones live in ``hierarchies/labelsets/``)::

    name: cityscapes
    title: Cityscapes (fine)
    aliases: [city]
    ignore_index: 255            # the label-map value that means 'unlabelled'
    groups:                      # optional: the dataset's own hierarchy above its labels
    - {name: vehicle-things, parent: outdoor-super-things, synset: vehicle.n.01}
    labels:
    - {id: 26, name: car, synset: car.n.01}
    - {id: 9, name: parking, ignore: true}
    - {id: 3, name: lane marking, parent: road.n.01}

Per label: ``synset`` is the WordNet 3.0 sense the label means (its identity across datasets),
``parent`` places it explicitly (a group or label of the same set, the synset of a concept in
the tree, or the name of a concept of the datasets merged before it, like COCO's
``outdoor-things``), ``ignore: true`` treats its pixels as unlabelled and ``used: false``
marks an id that is never annotated. Other keys (colours, train ids...) are kept in ``Label.extra``.

A plain text file with one class name per line is a label set too: line ``i`` (comments and
blank lines skipped) is label id ``i``, and synsets are looked up in WordNet by name.
"""

from __future__ import annotations

import re
import stat
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from dsspn_cli.errors import UserError, one_line, shown
from dsspn_cli.files import read_yaml
from dsspn_cli.resources import labelsets_dir

# Concepts are nouns: 'car.n.01'. Sense numbers start at 01 (NLTK reads '.00' as sense 1).
SYNSET_NAME = re.compile(r"^[^\s.][^\s]*\.n\.(0[1-9]|[1-9]\d)$")
MAX_LABEL_ID = 65535          # 16-bit label maps at most; the lookup tables are this long
_LABEL_KEYS = {"id", "name", "synset", "parent", "ignore", "used"}
_GROUP_KEYS = {"name", "synset", "parent"}


# What a name of a concept, label or group cannot hold: it is printed on one line, as
# written (a tree row, a table cell, a legend, a message). Control characters (line breaks,
# tabs, terminal escapes), line and paragraph separators, lone surrogates, and direction
# overrides and isolates (they make the text around them display in another order).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
                          "\ud800-\udfff]")


def is_synset_name(text: str) -> bool:
    return bool(SYNSET_NAME.match(text))


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a concept, label or group ('is empty', 'holds the character
    \\n'), or None."""
    if not name.strip():
        return "is empty"
    found = _UNPRINTABLE.search(name)
    if found:
        return f"holds the character {_escape(found)}"
    return None


def printable(name: str) -> str:
    """``name`` with the characters ``name_problem`` refuses escaped ('two\\nlines'), for
    the message that refuses it."""
    return _UNPRINTABLE.sub(_escape, name)


def _escape(found: re.Match) -> str:
    return ascii(found.group())[1:-1]


@dataclass(frozen=True)
class Label:
    id: int
    name: str
    synset: str | None = None
    parent: str | None = None
    ignore: bool = False
    used: bool = True
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def mapped(self) -> bool:
        """Whether the label must be mapped to a concept (not void, and really annotated)."""
        return self.used and not self.ignore

    @property
    def concept_name(self) -> str:
        """The name a concept created for this label gets ('Bike Lane' -> 'bike lane')."""
        readable = self.extra.get("readable")
        return str(readable).lower() if readable else self.name


@dataclass(frozen=True)
class Group:
    name: str
    parent: str | None = None
    synset: str | None = None


@dataclass
class LabelSet:
    name: str
    labels: list[Label]
    title: str = ""
    ignore_index: int = 255
    groups: list[Group] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    source: str = ""          # the built-in name or the path it was read from
    extra: dict = field(default_factory=dict)

    def label(self, label_id: int) -> Label:
        for item in self.labels:
            if item.id == label_id:
                return item
        raise KeyError(label_id)

    @property
    def mapped_labels(self) -> list[Label]:
        return [item for item in self.labels if item.mapped]

    @property
    def max_id(self) -> int:
        return max([item.id for item in self.labels] + [self.ignore_index])


# ----------------------------------------------------------------------------------- reading


def _fail(path, where: str, problem: str, fix: str):
    raise UserError(one_line(f"{path}: {where}: {problem}; {fix}"))


def _parse_label(path, index: int, raw) -> Label:
    where = f"labels[{index}]"
    if not isinstance(raw, dict):
        _fail(path, where, "must be a mapping like {id: 0, name: car, synset: car.n.01}",
              "fix the entry")
    if "id" in raw:
        where = f"labels[{index}] (id {shown(raw['id'])})"
    label_id = raw.get("id")
    if isinstance(label_id, bool) or not isinstance(label_id, int):
        _fail(path, where, "field 'id' must be an integer", "give the label-map value")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        _fail(path, where, "field 'name' must be a non-empty string", "name the class")
    if not -1 <= label_id <= MAX_LABEL_ID:
        _fail(path, where, f"field 'id' must be between -1 and {MAX_LABEL_ID}",
              "give the label-map value")
    synset = raw.get("synset")
    if synset is not None and (not isinstance(synset, str) or not is_synset_name(synset)):
        _fail(path, where, f"field 'synset' is {shown(synset)}, not a WordNet noun synset name",
              "write it like car.n.01 (a noun, sense 01 or above), or remove it")
    synonyms = raw.get("synonyms", [])
    if not isinstance(synonyms, list) or not all(isinstance(x, str) for x in synonyms):
        _fail(path, where, "field 'synonyms' must be a list of names", "write [a, b]")
    parent = raw.get("parent")
    if parent is not None and (not isinstance(parent, str) or not parent.strip()):
        _fail(path, where, "field 'parent' must be a string", "name a group, label or synset")
    flags = {}
    for key, default in (("ignore", False), ("used", True)):
        value = raw.get(key, default)
        if not isinstance(value, bool):
            _fail(path, where, f"field '{key}' must be true or false", f"fix '{key}'")
        flags[key] = value
    # Kept in 'extra', but predictions paint with it: checked here, where the file is named.
    colour = raw.get("color")
    if colour is not None and not (isinstance(colour, list) and len(colour) == 3 and all(
            type(c) is int and 0 <= c <= 255 for c in colour)):
        _fail(path, where, f"field 'color' is {shown(colour)}, not a colour",
              "write [red, green, blue], three whole numbers from 0 to 255, or remove it")
    extra = {k: v for k, v in raw.items() if k not in _LABEL_KEYS}
    return Label(label_id, name.strip(), synset, parent.strip() if parent else None,
                 flags["ignore"], flags["used"], extra)


def _parse_group(path, index: int, raw) -> Group:
    where = f"groups[{index}]"
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        _fail(path, where, "must be a mapping with a string 'name'", "fix the group entry")
    synset = raw.get("synset")
    if synset is not None and (not isinstance(synset, str) or not is_synset_name(synset)):
        _fail(path, f"{where} ({raw['name']})", f"field 'synset' is {shown(synset)}, not a "
              "WordNet noun synset name", "write it like vehicle.n.01, or remove it")
    parent = raw.get("parent")
    if parent is not None and not isinstance(parent, str):
        _fail(path, f"{where} ({raw['name']})", "field 'parent' must be a string",
              "name another group")
    return Group(raw["name"], parent, synset)


def _top_of_chain(by_name: dict, item, path, where: str):
    """Follow 'parent' within one kind of entry (groups, or labels) up to the first entry whose
    parent lies outside it; a cycle is an error."""
    chain, current = [item.name], item
    while current.parent is not None and current.parent in by_name:
        if current.parent in chain:
            _fail(path, where, "its parents form a cycle (" + " -> ".join(
                chain + [current.parent]) + ")", "fix the 'parent' fields")
        chain.append(current.parent)
        current = by_name[current.parent]
    return current


def _validate(labelset: LabelSet, path) -> LabelSet:
    seen_ids: dict[int, str] = {}
    seen_names: dict[str, int] = {}
    for kind, items in (("label", labelset.labels), ("group", labelset.groups)):
        for item in items:
            problem = name_problem(item.name)
            if problem:
                _fail(path, f"{kind} '{printable(item.name)}'", f"the name {problem}",
                      "write the name on one line, without control characters")
    for item in labelset.labels:
        if item.id in seen_ids:
            _fail(path, f"label id {item.id}", f"used twice ('{seen_ids[item.id]}' and "
                  f"'{item.name}')", "give every label its own id")
        if item.name in seen_names:
            _fail(path, f"label '{item.name}'", f"duplicate name (ids {seen_names[item.name]} "
                  f"and {item.id})", "give every label its own name")
        seen_ids[item.id] = item.name
        seen_names[item.name] = item.id
    group_names = [group.name for group in labelset.groups]
    for name in group_names:
        if group_names.count(name) > 1:
            _fail(path, f"group '{name}'", "duplicate name", "give every group its own name")
        if name in seen_names:
            _fail(path, f"group '{name}'", "has the name of a label",
                  "rename the group or the label")
    groups = {group.name: group for group in labelset.groups}
    for group in labelset.groups:
        current = _top_of_chain(groups, group, path, f"group '{group.name}'")
        if current.parent is not None and not is_synset_name(current.parent):
            _fail(path, f"group '{current.name}'", f"unknown parent '{current.parent}'",
                  "name another group of this file or a synset like vehicle.n.01")
    by_name = {item.name: item for item in labelset.labels}
    for item in labelset.labels:
        _top_of_chain(by_name, item, path, f"label '{item.name}' (id {item.id})")
        if item.mapped and item.id == labelset.ignore_index:
            _fail(path, f"label '{item.name}' (id {item.id})", "has the id of ignore_index "
                  f"({labelset.ignore_index})", "mark it 'ignore: true' or change ignore_index")
    if not labelset.mapped_labels:
        _fail(path, "labels", "no label to map (all ignored or unused)", "add labels")
    return labelset


def parse_labelset(data, path, source: str | None = None) -> LabelSet:
    """Build a LabelSet from the YAML document ``data`` read from ``path``."""
    if not isinstance(data, dict):
        raise UserError(f"{path}: a label set must be a YAML mapping with 'name' and 'labels'; "
                        "see hierarchies/labelsets/cityscapes.yaml for an example")
    name = data.get("name", Path(path).stem)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][\w.-]*", name):
        _fail(path, "field 'name'", f"{shown(name)} is not a valid dataset name",
              "use letters, digits, '-', '_' or '.'")
    labels = data.get("labels")
    if not isinstance(labels, list) or not labels:
        problem = "must be a list" if isinstance(labels, dict) else "missing or empty"
        _fail(path, "field 'labels'", problem, "list the classes under 'labels:' as '- {id: 0, "
              "name: car}' entries")
    groups = data.get("groups") or []
    if not isinstance(groups, list):
        _fail(path, "field 'groups'", "must be a list", "list groups under 'groups:'")
    ignore_index = data.get("ignore_index", 255)
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int) or not (
            0 <= ignore_index <= MAX_LABEL_ID):
        _fail(path, "field 'ignore_index'", f"must be an integer from 0 to {MAX_LABEL_ID}",
              "give the label-map value of unlabelled pixels (often 255 or 0)")
    aliases = data.get("aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        _fail(path, "field 'aliases'", "must be a list of names", "fix 'aliases'")
    title = data.get("title")
    if isinstance(title, bool) or not isinstance(title, (str, int, float, type(None))):
        _fail(path, "field 'title'", "must be a string", "write the dataset's display name")
    labelset = LabelSet(
        name=name,
        title=str(title or name),
        labels=[_parse_label(path, i, raw) for i, raw in enumerate(labels)],
        groups=[_parse_group(path, i, raw) for i, raw in enumerate(groups)],
        ignore_index=ignore_index,
        aliases=list(aliases),
        source=source or str(path),
        extra={k: v for k, v in data.items()
               if k not in {"name", "title", "labels", "groups", "ignore_index", "aliases"}},
    )
    return _validate(labelset, path)


def read_text_labelset(path: Path) -> LabelSet:
    """One class name per line; line i (skipping blank lines and '#' comments) is label id i."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the label set ({exc.__class__.__name__}); "
                        "give a UTF-8 text file with one class name per line") from None
    names = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not names:
        raise UserError(f"{path}: no class names; write one class name per line")
    if len(names) > MAX_LABEL_ID:
        raise UserError(f"{path}: {len(names)} class names, but a 16-bit label map holds at most "
                        f"{MAX_LABEL_ID} classes besides its ignore value {MAX_LABEL_ID}; "
                        "merge or remove classes")
    labels = [Label(i, name) for i, name in enumerate(names)]
    # 255 marks unlabelled pixels in 8-bit maps; with more classes the maps are 16-bit.
    ignore = 255 if len(names) <= 255 else MAX_LABEL_ID
    return _validate(LabelSet(name=path.stem, title=path.stem, labels=labels,
                              ignore_index=ignore, source=str(path)), path)


@lru_cache(maxsize=None)
def builtin_labelsets() -> dict[str, Path]:
    """Built-in label sets by name and alias (lower case) -> file."""
    table: dict[str, Path] = {}
    for path in sorted(labelsets_dir().glob("*.yaml")):
        data = read_yaml(path, "label set")
        for key in [data.get("name", path.stem), *(data.get("aliases") or [])]:
            table[str(key).lower()] = path
    return table


def builtin_names() -> list[str]:
    """Canonical names of the built-in label sets, in file order."""
    return sorted({path.stem for path in builtin_labelsets().values()})


def load_labelset(ref: str | Path) -> LabelSet:
    """A built-in label set by name or alias (``coco``, ``ade20k``...), or a file by path."""
    from dsspn_cli.files import stat_path

    text = str(ref)
    builtin = builtin_labelsets().get(text.lower())
    found = stat_path(text, "read the label set")
    if builtin is not None and (found is None or not stat.S_ISREG(found.st_mode)):
        return parse_labelset(read_yaml(builtin, "label set"), builtin, source=builtin.stem)
    try:
        path = Path(text).expanduser()
    except RuntimeError:            # '~someone/...' for a user without a home folder
        raise UserError(one_line(f"{text}: cannot expand '~' (no such user or home folder); "
                                 "give the full path of the label-set file")) from None
    found = stat_path(path, "read the label set")
    if found is not None and not stat.S_ISDIR(found.st_mode):
        if path.suffix.lower() in (".yaml", ".yml"):
            return parse_labelset(read_yaml(path, "label set"), path)
        if path.suffix.lower() in (".txt", ""):
            return read_text_labelset(path)
        raise UserError(one_line(f"{path}: label sets are YAML (.yaml) or text files (.txt, one "
                                 "class name per line); convert it"))
    if found is not None:
        raise UserError(one_line(f"{path}: is a folder, expected a label-set file"))
    if path.suffix or "/" in text or "\\" in text:
        raise UserError(one_line(f"{text}: no such label-set file; check the path"))
    raise UserError(one_line(f"unknown dataset '{text}'; built-in label sets: "
                             f"{', '.join(builtin_names())}, or give the path of a YAML/text "
                             "label set"))


def resolve_synsets(labelset: LabelSet, wn) -> tuple[LabelSet, list[str]]:
    """Look up, by name, the synsets of labels that have neither a synset nor a parent.

    Returns the completed label set and one note per label whose name has several noun senses
    (the first, most frequent one is taken: the note says which, and how to choose another).
    """
    notes: list[str] = []
    labels = []
    for item in labelset.labels:
        if item.synset or item.parent or not item.mapped:
            labels.append(item)
            continue
        senses = []
        for candidate in [item.name, *(item.extra.get("synonyms") or [])]:
            senses = wn.synsets(str(candidate).strip().replace(" ", "_").replace("-", "_"),
                                pos="n")
            if senses:
                break
        if not senses:
            raise UserError(
                f"{labelset.source}: label '{item.name}' (id {item.id}): WordNet has no noun "
                "by that name; give it a 'synset:' or a 'parent:' in a YAML label set")
        if len(senses) > 1:
            others = ", ".join(s.name() for s in senses[1:4])
            notes.append(f"{labelset.name} '{item.name}': took {senses[0].name()} "
                         f"({senses[0].definition()}); other senses: {others}")
        labels.append(Label(item.id, item.name, senses[0].name(), item.parent, item.ignore,
                            item.used, item.extra))
    return LabelSet(labelset.name, labels, labelset.title, labelset.ignore_index,
                    labelset.groups, labelset.aliases, labelset.source, labelset.extra), notes
