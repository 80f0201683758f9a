"""``dsspn data convert``: a dataset's label maps rewritten in another label set's ids, through
the concept tree, as a ``folder`` dataset (images/<split>/, labels/<split>/, labels.yaml).

Each source label is routed once, before any file is read, by where its concepts sit in the
tree against the target classes' concepts:

- a target class *covers* a source concept when one of the class's concepts is that concept
  or lies above it; the label goes to the covering class with the deepest concept (a finer
  label goes to the class that holds it: Mapillary's *bicyclist* to Cityscapes' *rider*);
- a source concept *above* a target class is coarser than the target (ADE20K's *animal* to
  COCO's *cat* and *dog*): its pixels may be any of those classes, so they are ignored, and
  counted as such. A target class that maps onto the tree only as coarser (it is finer than
  every concept of the tree) lies below its concept. Target classes below the source concept
  that lie at or below another, finer label of the source do not count: the source's label
  means "this concept, but none of my finer labels" (as training reads it);
- a source concept with no target class at, above or below it goes to the target's
  everything-else class where it has one (``other: true``: VOC's background, MSeg's way),
  else to the target's ignore value;
- void labels of the source, labels with no concept in the tree, and the source's own
  everything-else class (it may hold anything) go to the ignore value.

The source maps onto the tree by the tree's own table when it is one of the tree's datasets
(the same label set), else through ``vocabulary.map_labelset`` (WordNet); the target alike.
The result is one lookup table, source id -> target id, applied to every label map.

Every file is written atomically; images are copied byte for byte. The target label set is
written last (``labels.yaml``), so that a conversion stopped half-way (an error, a Ctrl-C)
does not leave a folder that reads as a complete dataset; running it again finishes it. No
torch here.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dsspn_cli.data.common import BadFile, Sample, image_size, size_mismatch
from dsspn_cli.data.folder import Folder
from dsspn_cli.data.formats import check_root, get_format, labelset_for
from dsspn_cli.data.loading import thread_pool
from dsspn_cli.data.targets import LabelIds
from dsspn_cli.errors import UserError, one_line, os_problem
from dsspn_cli.files import atomic_write_bytes, check_output, read_text_file
from dsspn_cli.hierarchy.labelset import LabelSet
from dsspn_cli.hierarchy.vocabulary import everything_else, map_labelset

LABELSET_FILE = "labels.yaml"

# Why a source label went where it went (``Route.why``).
COVERED = "covered"            # to the target class covering its concept
OTHER = "other"                # to the target's everything-else class
VOID = "void"                  # void or unlabelled in the source
UNNAMED = "no concept in the tree"
EVERYTHING_ELSE = "everything else in the source"   # a source's other: true class (VOC's
                                                    # background): it may be anything
NO_CLASS = "no target class"   # nothing of the target at, above or below it
COARSER = "coarser"            # target classes lie below it
SEVERAL = "several"            # several target classes, none deeper than the others


@dataclass
class Route:
    """Where one source label's pixels go, and how many there were."""

    id: int
    name: str
    concepts: tuple[str, ...]      # its concepts in the tree (none: void, or not in it)
    to: int | None                 # the target id; None: the target's ignore value
    why: str
    classes: tuple[str, ...] = ()  # the target classes meant (to, or those that stand in it)
    pixels: int = 0

    def reason(self) -> str | None:
        """Why its pixels are ignored, in words: 'coarser than the target'; None where they
        go to a target class."""
        if self.why in (COVERED, OTHER):
            return None
        return {COARSER: "coarser than the target", SEVERAL: "several target classes",
                VOID: "void in the source"}.get(self.why, self.why)

    def text(self) -> str:
        """Where it went, in words: 'rider (25)', 'ignore: coarser than the target (...)'."""
        if self.why == COVERED:
            return f"{self.classes[0]} ({self.to})"
        if self.why == OTHER:
            return f"{self.classes[0]} ({self.to}): everything else"
        if self.why in (COARSER, SEVERAL):
            listed = ", ".join(self.classes[:4]) + (", ..." if len(self.classes) > 4 else "")
            return f"ignore: {self.reason()} ({listed})"
        return f"ignore: {self.reason()}"

    def to_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "concepts": list(self.concepts),
                "pixels": self.pixels, "to": self.to, "why": self.why,
                "classes": list(self.classes), "text": self.text()}


@dataclass(frozen=True)
class _TargetClass:
    id: int
    name: str
    concepts: frozenset[str]
    finer: bool = False            # mapped as coarser: the class lies below its concept


@dataclass
class Relabelling:
    """The routes of every source label and the lookup table they make."""

    source: LabelSet
    target: LabelSet
    routes: list[Route]
    lut: np.ndarray                # source id -> target id
    dtype: type                    # uint8, or uint16 where a target id is over 255
    unreached: list[str]           # target classes no source label goes to


# ------------------------------------------------------------------------------- routing


def tree_dataset(tree, labelset: LabelSet) -> str | None:
    """The tree's dataset this label set is (same name and the same labels), or None: a
    file that only borrows a dataset's name is mapped by WordNet like any other."""
    from dsspn_cli.hierarchy.tree import labelset_of

    if labelset.name not in tree.datasets:
        return None
    try:
        own = labelset_of(tree.source or None, tree.datasets[labelset.name], labelset.name)
    except UserError:
        return None

    def labels(of: LabelSet) -> set:
        return {(label.id, label.name) for label in of.mapped_labels}
    return labelset.name if labels(own) == labels(labelset) else None


def _concepts(tree, labelset: LabelSet, wn, without_other: bool = False
              ) -> dict[int, tuple[frozenset[str], bool]]:
    """Per mapped label id: its concepts, and whether it maps only as coarser (finer than
    every concept of the tree). ``without_other``: all but the everything-else class, which
    is not a concept but the pixels of no other class (as zero-shot scoring maps it)."""
    dataset = tree_dataset(tree, labelset)
    if dataset is not None:
        other = everything_else(labelset) if without_other else None
        return {label_id: (frozenset({concept}), False)
                for label_id, concept in tree.label_map(dataset).items()
                if other is None or label_id != other.id}
    vocabulary = map_labelset(tree, labelset, wn, strict=False, without_other=without_other)
    return {c.label_id: (c.concepts, c.how == "coarser") for c in vocabulary.classes}


def plan(tree, source: LabelSet, target: LabelSet, wn=None) -> Relabelling:
    """Route every label of ``source`` to a class of ``target`` (see the module's text)."""
    ancestors = {name: frozenset(tree.ancestors(name)) for name in tree.names}
    depth = {name: len(ancestors[name]) for name in tree.names}
    names = {label.id: label.name for label in target.labels}
    targets = [_TargetClass(i, names[i], concepts, finer)
               for i, (concepts, finer)
               in sorted(_concepts(tree, target, wn, without_other=True).items())
               if concepts and i >= 0]
    other = everything_else(target)
    source_other = everything_else(source)
    by_source = _concepts(tree, source, wn)
    source_concepts = frozenset().union(*(c for c, _ in by_source.values()))

    def within(inner: str, outer: str) -> bool:          # at or below
        return inner == outer or outer in ancestors[inner]

    def route(concept: str) -> tuple[str, tuple[int, ...]]:
        """(why, target ids) for one source concept."""
        finer_labels = [c for c in source_concepts if concept in ancestors[c]]
        below, covering = [], []
        for item in targets:
            for place in item.concepts:
                if within(place, concept) and (item.finer or place != concept):
                    # Below the source concept; not if the source labels it apart.
                    if not any(within(place, label) for label in finer_labels):
                        below.append(item)
                elif not item.finer and within(concept, place):
                    covering.append((depth[place], item.id))
        if below:
            return COARSER, tuple(sorted({item.id for item in below}))
        if covering:
            deepest = max(d for d, _ in covering)
            ids = tuple(sorted({i for d, i in covering if d == deepest}))
            return (COVERED if len(ids) == 1 else SEVERAL), ids
        if other is not None:
            return OTHER, (other.id,)
        return NO_CLASS, ()

    routes = []
    for label in sorted(source.labels, key=lambda item: item.id):
        concepts, _ = by_source.get(label.id, (frozenset(), False))
        ordered = tuple(sorted(concepts, key=tree.id))
        if not label.mapped:
            routes.append(Route(label.id, label.name, (), None, VOID))
        elif label is source_other:
            routes.append(Route(label.id, label.name, ordered, None, EVERYTHING_ELSE))
        elif not concepts:
            routes.append(Route(label.id, label.name, (), None, UNNAMED))
        else:
            routes.append(_combine(label.id, label.name, ordered, [route(c) for c in ordered],
                                   names))
    if all(label.id != source.ignore_index for label in source.labels):
        routes.append(Route(source.ignore_index, "unlabelled (ignore_index)", (), None, VOID))
        routes.sort(key=lambda item: item.id)
    lut = np.full(max(source.max_id + 1, 256), target.ignore_index, dtype=np.int64)
    for item in routes:
        if item.to is not None and item.id >= 0:      # id -1: a label never in a map
            lut[item.id] = item.to
    reached = {item.to for item in routes}
    unreached = [label.name for label in target.mapped_labels if label.id not in reached]
    most = max([label.id for label in target.labels] + [target.ignore_index])
    return Relabelling(source, target, routes, lut, np.uint8 if most <= 255 else np.uint16,
                       unreached)


def _combine(label_id: int, name: str, concepts: tuple[str, ...], ways: list, names: dict
             ) -> Route:
    """One source label's route from its concepts' (a union: CamVid's Tree is bush and
    tree): where they all go one way, that way; where any is coarser than the target, coarser;
    otherwise its pixels would be split among several target classes, and are ignored."""
    whys = {why for why, _ in ways}
    ids = tuple(sorted({i for _, found in ways for i in found}))
    if len(set(ways)) == 1:
        why = ways[0][0]
        to = ids[0] if why in (COVERED, OTHER) else None
    elif COARSER in whys:
        why, to = COARSER, None
        ids = tuple(sorted({i for way, found in ways if way == COARSER for i in found}))
    else:
        why, to = SEVERAL, None
    classes = tuple(names[i] for i in ids)
    if why == SEVERAL and NO_CLASS in whys:
        classes += ("no class",)
    return Route(label_id, name, concepts, to, why, classes)


# ------------------------------------------------------------------------------- the work


@dataclass
class _Job:
    sample: Sample
    image: str                     # paths below the output folder
    label: str


@dataclass
class ConvertReport:
    root: str
    format: str
    source: str
    target: str
    tree: str
    out: str
    target_ignore: int
    splits: dict[str, dict[str, int]] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)
    unreached: list[str] = field(default_factory=list)

    @property
    def pixels(self) -> int:
        return sum(route.pixels for route in self.routes)

    def ignored(self, *whys: str) -> int:
        """Pixels written as the target's ignore value (for these reasons; any)."""
        return sum(r.pixels for r in self.routes if r.to is None and (not whys or r.why in whys))

    def to_dict(self) -> dict:
        return {"root": self.root, "format": self.format, "source": self.source,
                "target": self.target, "tree": self.tree, "out": self.out,
                "target_ignore_index": self.target_ignore, "splits": self.splits,
                "pixels": self.pixels, "ignored_pixels": self.ignored(),
                "labels": [route.to_dict() for route in self.routes],
                "unreached_target_classes": self.unreached}


def _splits(fmt, root: Path, wanted) -> dict[str, list[Sample]]:
    """The samples of each split to convert: those asked for, or every split of the layout
    that is there and that a folder dataset has (VOC's trainval is its train and val)."""
    from dsspn_cli.data.audit import splits_present

    for split in wanted or ():
        fmt.folder(split)                      # an unknown split: one line naming the splits
        if split not in Folder.splits:
            raise UserError(f"--split {split}: a folder dataset has splits "
                            f"{', '.join(Folder.splits)}; give those ({fmt.name}'s {split} "
                            "may be the union of two of them)")
    found, problems = splits_present(fmt, root, wanted)
    if problems:                               # a split there that cannot be read
        raise UserError(problems[0].problem)
    found = {split: samples for split, samples in found.items() if split in Folder.splits}
    if not found:
        raise UserError(f"{root}: no split of {fmt.name} that a folder dataset holds "
                        f"({', '.join(Folder.splits)})")
    return found


def _jobs(by_split: dict[str, list[Sample]]) -> tuple[list[_Job], dict[str, dict[str, int]]]:
    """One job per image with a label map, named by its key (unique within the split: a
    repeated key gets '-2', '-3'...); the images and label maps without a partner are
    counted, not converted."""
    jobs, counts = [], {}
    for split, samples in by_split.items():
        taken: set[str] = set()
        counts[split] = {"images": 0, "no_label_map": 0, "no_image": 0}
        for sample in samples:
            if sample.extra.get("missing") == "image":
                counts[split]["no_image"] += 1
                continue
            if sample.label is None:
                counts[split]["no_label_map"] += 1
                continue
            stem = sample.key.replace(os.sep, "_")
            name, n = stem, 1
            while name.lower() in taken:           # case-insensitive file systems too
                n += 1
                name = f"{stem}-{n}"
            taken.add(name.lower())
            jobs.append(_Job(sample, f"images/{split}/{name}{sample.image.suffix}",
                             f"labels/{split}/{name}.png"))
            counts[split]["images"] += 1
    return jobs, counts


def _labelset_text(labelset: LabelSet) -> str:
    """The target label set as the YAML ``labels.yaml`` gets: the file itself (comments,
    sources and all) where it is YAML with its name; otherwise written from what was read,
    so that the folder's dataset keeps the label set's name (not 'labels')."""
    import yaml

    from dsspn_cli.hierarchy.labelset import builtin_labelsets

    path = Path(labelset.source)
    if not path.is_file():                     # a built-in one: source is its name
        path = builtin_labelsets()[labelset.source.lower()]
    if path.suffix.lower() in (".yaml", ".yml"):
        text = read_text_file(path, "label set", "YAML")
        doc = yaml.safe_load(text)
        if isinstance(doc, dict) and doc.get("name") == labelset.name:
            return text
        doc = {"name": labelset.name, **{k: v for k, v in doc.items() if k != "name"}}
        return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    labels = []
    for label in labelset.labels:              # a text label set: ids and names
        entry = {"id": label.id, "name": label.name}
        if label.ignore:
            entry["ignore"] = True
        labels.append(entry)
    return yaml.safe_dump({"name": labelset.name, "title": labelset.title,
                           "ignore_index": labelset.ignore_index, "labels": labels},
                          sort_keys=False, allow_unicode=True)


def _refuse_leftovers(out: Path, jobs: list[_Job], splits, labelset_text: str) -> None:
    """An output folder that already holds a dataset is written again only where this
    conversion writes the same files (a conversion run again after a Ctrl-C): files in its
    split folders that this one would not write, or another label set, would mix two
    datasets in one."""
    writing = {job.image for job in jobs} | {job.label for job in jobs}
    for split in splits:
        for part in ("images", "labels"):
            folder = out / part / split
            if not folder.is_dir():
                continue
            extra = sorted(f"{part}/{split}/{name}" for name in os.listdir(folder)
                           if not name.startswith(".") and f"{part}/{split}/{name}" not in
                           writing)
            if extra:
                raise UserError(one_line(
                    f"{out}: holds {len(extra)} file{'s' if len(extra) > 1 else ''} in "
                    f"{part}/{split} that this conversion does not write (first: "
                    f"{out / extra[0]}); give a new or empty folder, or remove them"))
    for name in ("labels.yml", "labels.txt", LABELSET_FILE):
        there = out / name
        if not there.is_file() and not there.is_symlink():
            continue
        if name == LABELSET_FILE and not there.is_symlink():
            try:
                if there.read_text(encoding="utf-8") == labelset_text:
                    continue
            except (OSError, UnicodeDecodeError):
                pass
        raise UserError(one_line(f"{there}: holds another label set; give a new or empty "
                                 "folder, or remove it"))


def _png(values: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format="PNG")    # uint8: L, uint16: I;16
    return buffer.getvalue()


def convert_dataset(root, format_name: str, to: str, out, tree_file=None, splits=None,
                    workers: int = 4, json_out=None,
                    track=lambda items, total, what: items) -> ConvertReport:
    """Write every label map of the dataset at ``root`` in the ids of the label set ``to``,
    with its image, as a folder dataset in ``out``; return the report (see the module)."""
    from dsspn_cli.hierarchy.labelset import load_labelset
    from dsspn_cli.hierarchy.tree import load_tree

    root = check_root(root)
    fmt = get_format(format_name)
    source = labelset_for(fmt, root)
    try:
        target = load_labelset(to)
    except UserError as exc:                   # say which option named it
        raise UserError(one_line(f"--to {to}: {exc}")) from None
    tree = load_tree(tree_file)
    relabelling = plan(tree, source, target)
    by_split = _splits(fmt, root, splits)
    jobs, counts = _jobs(by_split)
    if not jobs:
        raise UserError(f"{root}: no image with a label map in "
                        f"{', '.join(by_split)}; run 'dsspn data check {root} --format "
                        f"{fmt.name}'")
    text = _labelset_text(target)
    inputs = [root, tree.source, target.source if Path(target.source).is_file() else None]
    out = check_output(out, folder=True, inputs=inputs,
                       writes=[LABELSET_FILE] + [j.image for j in jobs] + [j.label for j in jobs])
    if json_out is not None:
        json_out = check_output(json_out, inputs=inputs)
        written = {os.path.abspath(out / p) for p in [LABELSET_FILE] + [j.image for j in jobs]
                   + [j.label for j in jobs]}
        if os.path.abspath(json_out) in written:
            raise UserError(one_line(f"--json {json_out}: is a file of the converted dataset; "
                                     "write the report elsewhere"))
    _refuse_leftovers(out, jobs, by_split, text)

    lut, dtype, ids = relabelling.lut, relabelling.dtype, LabelIds(source)
    hint = f"run 'dsspn data check {root} --format {fmt.name}' for every problem"

    def one(job: _Job) -> np.ndarray:
        sample = job.sample
        try:
            values = fmt.read_label(sample)
            ids.check(values, sample.label)
            shape = image_size(sample.image)
            if values.shape != shape:
                raise BadFile(sample.label, size_mismatch(sample.label, values.shape,
                                                          sample.image, shape))
            picture = sample.image.read_bytes()
        except BadFile as exc:
            raise UserError(one_line(f"{exc}; {hint}")) from None
        except OSError as exc:
            raise UserError(one_line(f"{sample.image}: cannot read the image: "
                                     f"{os_problem(exc)}")) from None
        # A Ctrl-C drops the queued jobs only: a thread finishes the one it is on, both
        # files. Only a kill can part them; 'dsspn data check' then names the file, and
        # running the conversion again writes it.
        atomic_write_bytes(out / job.label, _png(lut[values].astype(dtype)), within=out)
        atomic_write_bytes(out / job.image, picture, within=out)
        return np.bincount(values.ravel(), minlength=len(lut))

    pixels = np.zeros(len(lut), dtype=np.int64)
    with thread_pool(workers) as pool:
        for found in track(pool.map(one, jobs), len(jobs), "converting"):
            pixels += found
    atomic_write_bytes(out / LABELSET_FILE, text.encode("utf-8"), within=out)
    for route in relabelling.routes:
        route.pixels = int(pixels[route.id]) if route.id >= 0 else 0
    report = ConvertReport(str(root), fmt.name, source.name, target.name, tree.source,
                           str(out), target.ignore_index, counts, relabelling.routes,
                           relabelling.unreached)
    if json_out is not None:
        import json

        atomic_write_bytes(json_out, (json.dumps(report.to_dict(), indent=1) + "\n")
                           .encode("utf-8"))
    return report
