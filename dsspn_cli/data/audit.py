"""``dsspn data check`` and ``dsspn data stats``: what is on disk, and what the tree sees in it.

Both read every file once, in a few threads (Pillow decodes outside the GIL), and report all
problems at once instead of stopping at the first. An error or a Ctrl-C drops the reading
still queued (``loading.thread_pool``): the command ends at once, not after the dataset.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dsspn_cli.data.common import BadFile, MissingSplit, Sample, read_image, size_mismatch
from dsspn_cli.data.formats import check_root, get_format, labelset_for
from dsspn_cli.data.loading import thread_pool
from dsspn_cli.errors import UserError

if TYPE_CHECKING:
    from dsspn_cli.data.targets import LabelIds


@dataclass
class Problem:
    file: str
    problem: str


@dataclass
class CheckReport:
    root: str
    format: str
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {"root": self.root, "format": self.format, "counts": self.counts,
                "problems": [{"file": p.file, "problem": p.problem} for p in self.problems]}


def splits_present(fmt, root: Path, splits=None) -> tuple[dict[str, list[Sample]], list]:
    """Samples of each split whose folder exists, and the problems of splits that exist but
    cannot be read (a missing annotation file, a broken JSON); a clear error when no split
    exists at all."""
    found, problems, missing = {}, [], None
    for split in splits or ():         # an unknown split is a usage error, not a problem
        fmt.folder(split)
    for split in splits or fmt.splits:
        try:
            found[split] = fmt.samples(root, split)
        except MissingSplit as exc:
            if splits:
                raise
            missing = missing or exc
        except UserError as exc:
            problems.append(Problem(f"{root} ({split})", str(exc)))
    if not found and not problems:
        raise missing
    return found, problems


def _check_one(fmt, ids: LabelIds, sample: Sample) -> list[Problem]:
    if sample.extra.get("missing") == "image":
        return [Problem(str(sample.label), "label map without an image (expected "
                        f"{sample.image.name})")]
    problems = []
    try:
        image = read_image(sample.image)
    except BadFile as exc:
        return [Problem(str(exc.path), exc.problem)]
    if sample.label is None:
        return [Problem(str(sample.image), "image without a label map")]
    try:
        values = fmt.read_label(sample)
    except BadFile as exc:
        return [Problem(str(exc.path), exc.problem)]
    if values.shape != image.shape[:2]:
        problems.append(Problem(str(sample.label), size_mismatch(sample.label, values.shape,
                                                                 sample.image, image.shape)))
    bad = ids.undefined_values(values)
    if bad:
        problems.append(Problem(str(sample.label), "label values "
                                + ", ".join(map(str, bad[:8])) + " are not in the label set"))
    return problems


def check_dataset(root, format_name: str, splits=None, workers: int = 4,
                  track=lambda items, total, what: items) -> CheckReport:
    from dsspn_cli.data.targets import LabelIds  # here: it brings in the tree (networkx)

    root = check_root(root)
    fmt = get_format(format_name)
    labelset = labelset_for(fmt, root)
    ids = LabelIds(labelset)
    report = CheckReport(str(root), fmt.name)
    by_split, split_problems = splits_present(fmt, root, splits)
    report.problems.extend(split_problems)
    samples = []
    for split, items in by_split.items():
        report.counts[split] = sum(1 for s in items if s.extra.get("missing") != "image")
        samples.extend(items)
    with thread_pool(workers) as pool:
        results = pool.map(lambda s: _check_one(fmt, ids, s), samples)
        for problems in track(results, len(samples), "checking"):
            report.problems.extend(problems)
    if not samples and not report.problems:
        report.problems.append(Problem(str(root), "no images found in any split"))
    return report


@dataclass
class StatsReport:
    root: str
    dataset: str
    images: int
    pixel_share: dict[str, float]          # concept name -> share of labelled pixels
    neurons_per_image: float
    ignored_share: float

    def to_dict(self) -> dict:
        return {"root": self.root, "dataset": self.dataset, "images": self.images,
                "neurons_per_image": self.neurons_per_image,
                "ignored_share": self.ignored_share, "pixel_share": self.pixel_share}


def dataset_stats(root, format_name: str, table, dataset: str | None = None,
                  split: str = "train", workers: int = 4,
                  track=lambda items, total, what: items) -> StatsReport:
    """Pixel share per concept, and how many semantic neurons an image activates on average
    (the neurons on the paths from the root to the concepts in its label map, paper 3.3)."""
    from dsspn_cli.data.targets import LabelMapper

    root = check_root(root)
    fmt = get_format(format_name)
    labelset = labelset_for(fmt, root)
    name = dataset or labelset.name
    if fmt.held_out and name not in table.datasets:
        # Until its classes can be mapped onto the tree's concepts, the tree sees nothing here.
        raise UserError(f"--format {fmt.name}: {labelset.title} is a held-out test set, not a "
                        f"dataset of this tree ({', '.join(table.datasets)}), and mapping its "
                        "classes onto the tree's concepts is not there yet; 'dsspn data check' "
                        "reads it, or merge a tree with it (dsspn hierarchy merge coco ade "
                        f"cityscapes mapillary {name} -o tree.yaml) and give --tree tree.yaml")
    mapper = LabelMapper(table, name, labelset)
    samples = [s for s in fmt.samples(root, split) if s.extra.get("missing") != "image"]
    if not samples:
        raise UserError(f"{root}: no images in split '{split}'")
    path_neurons = [frozenset(n for n, _ in path) for path in table.concept_path]

    def one(sample: Sample):
        if sample.label is None:
            raise UserError(f"{sample.image}: image without a label map; run 'dsspn data "
                            "check' for the full list")
        try:
            concepts = mapper(fmt.read_label(sample), sample.label)
        except BadFile as exc:
            raise UserError(f"{exc}; run 'dsspn data check' for the full list") from None
        ids, counts = np.unique(concepts, return_counts=True)
        return dict(zip(ids.tolist(), counts.tolist()))

    pixels: Counter = Counter()
    neurons = []
    with thread_pool(workers) as pool:
        for counts in track(pool.map(one, samples), len(samples), "reading"):
            pixels.update(counts)
            active = set()
            for concept in counts:
                if concept >= 0:
                    active |= path_neurons[concept]
            neurons.append(len(active))
    labelled = sum(n for c, n in pixels.items() if c >= 0)
    total = sum(pixels.values())
    share = {table.concepts[c]: n / labelled for c, n in
             sorted(pixels.items(), key=lambda item: -item[1]) if c >= 0} if labelled else {}
    return StatsReport(str(root), mapper.dataset, len(samples), share,
                       float(np.mean(neurons)), (total - labelled) / total if total else 0.0)


