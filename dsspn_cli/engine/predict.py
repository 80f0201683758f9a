"""Prediction with a trained checkpoint: label maps, colour maps, overlays, legends, JSON.

Each pixel descends the concept tree from the root (``DSSPN.predict``): to a leaf concept, or,
for a target dataset, to a concept that dataset labels, written in its own label ids. Images
are decoded in loader workers and run through the inference path evaluation uses
(``infer.Inference``: large images in overlapping tiles), so both give the same labels.

With ``--classes`` or ``--labelset`` (``choose_classes``) the answer is read in that
vocabulary, each class mapped onto the tree by ``hierarchy.vocabulary``: a class may be a
union of concepts ('motor vehicle': car, motorcycle, truck) and gets the pixels of any of
them; every other pixel is 'other'. With ``--dataset`` the outputs name the dataset's own
labels, the tree's concept beside them.

For an image ``NAME`` the outputs are ``NAME_labels.png`` (label ids: 8-bit, or 16-bit when
the ids exceed 255), ``NAME_color.png``, ``NAME_overlay.png`` (photo and colours 50/50),
``NAME_legend.png`` and, on request, ``NAME.json`` (per class present: its name, id,
concepts, tree path, pixels and mean confidence); all written atomically. Images found in a
folder keep their sub-folders under the output folder.
"""

from __future__ import annotations

import colorsys
import io
import json
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from dsspn_cli.data.common import IMAGE_SUFFIXES, BadFile, image_size
from dsspn_cli.engine.infer import (
    MIN_TILE,
    TILE,
    Inference,
    Track,
    predict_array,
    tile_spans,
)
from dsspn_cli.engine.options import check_options
from dsspn_cli.engine.video import predict_video, prepare_videos, split_videos
from dsspn_cli.errors import UserError
from dsspn_cli.files import atomic_write_bytes, check_output, kind_of, stat_path
from dsspn_cli.pages.predictions import shared_path

SUFFIXES = ("_labels.png", "_color.png", "_overlay.png", "_legend.png")
LEGEND_ROWS = 40          # classes listed in a legend; the rest are summed on one line


# ----------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class ImageJob:
    image: Path        # the file to read
    stem: Path         # output name without suffix, relative to the output folder


def find_images(inputs: Sequence[str | Path]) -> list[ImageJob]:
    """Image files given directly, and every image inside the folders given (recursive,
    sorted; hidden files skipped). Files given directly are read whatever their suffix.
    UserError when a path is missing, nothing is found, or two inputs would write the same
    outputs. (The output folder lies in no folder given: ``check_images``.)"""
    jobs: list[ImageJob] = []
    seen: set[Path] = set()
    for given in inputs:
        path = Path(given)
        st = stat_path(path)
        if st is not None and stat.S_ISDIR(st.st_mode):
            found = []
            for candidate in sorted(path.rglob("*")):
                relative = candidate.relative_to(path)
                if (not candidate.is_file() or candidate.suffix.lower() not in IMAGE_SUFFIXES
                        or any(part.startswith(".") for part in relative.parts)):
                    continue
                resolved = candidate.resolve()
                found.append((candidate, resolved, relative.with_suffix("")))
            if not found:
                raise UserError(f"{path}: no images in this folder (looked for "
                                f"{', '.join(IMAGE_SUFFIXES)}, in sub-folders too); give image "
                                "files or a folder that holds some")
            for candidate, resolved, stem in found:
                if resolved not in seen:
                    seen.add(resolved)
                    jobs.append(ImageJob(candidate, stem))
        elif st is not None and stat.S_ISREG(st.st_mode) and path.suffix.lower() in (".pt",
                                                                                   ".pth"):
            raise UserError(f"{path}: is a checkpoint, not an image; give the model first "
                            "(dsspn predict CKPT IMAGE...) or with --model")
        elif st is not None and stat.S_ISREG(st.st_mode):
            resolved = path.resolve()
            if resolved not in seen:
                seen.add(resolved)
                jobs.append(ImageJob(path, Path(path.stem)))
        elif st is not None:
            raise UserError(f"{path}: is {kind_of(st.st_mode)}, not an image or a folder")
        else:
            raise UserError(f"{path}: no such image or folder; check the path")
    if not jobs:
        raise UserError("no images given; name image files or folders of images")
    owners: dict[Path, Path] = {}
    for job in jobs:
        if job.stem in owners:
            raise UserError(f"{owners[job.stem]} and {job.image} would both write "
                            f"{job.stem}_labels.png; rename one or predict them separately")
        owners[job.stem] = job.image
    return jobs


def check_images(jobs: Sequence[ImageJob], out: Path, as_json: bool = False,
                 reads: Sequence = (), html: bool = False) -> None:
    """Before any work: no output may replace an input (an image named like another's
    outputs) nor be written through a link (a sub-folder ``OUT/<city>`` that is one), the
    output folder is none of the paths read (``reads``: the paths given, the model, a label
    set), lies inside none and holds none; and every image's header is read, so that an
    unreadable file stops with its name."""
    from dsspn_cli.pages import predictions as pages

    suffixes = SUFFIXES + ((".json",) if as_json else ()) + (pages.SUFFIXES if html else ())
    check_output(out, folder=True, inputs=list(reads) + [job.image for job in jobs],
                 writes=[f"{job.stem}{suffix}" for job in jobs for suffix in suffixes]
                 + ([pages.PAGE] if html else []))
    for job in jobs:
        try:
            image_size(job.image)
        except BadFile as exc:
            raise UserError(str(exc)) from None


# ----------------------------------------------------------------------------------- colours


def concept_palette(count: int) -> np.ndarray:
    """A fixed colour per concept id (count x 3 uint8): golden-ratio hues, three saturation
    and brightness steps; colour i depends on i alone."""
    colours = np.zeros((count, 3), dtype=np.uint8)
    for i in range(count):
        hue = (i * 0.618033988749895) % 1.0
        saturation = (0.65, 0.9, 0.5)[i % 3]
        value = (0.95, 0.7, 0.85)[(i // 3) % 3]
        colours[i] = [round(255 * c) for c in colorsys.hsv_to_rgb(hue, saturation, value)]
    return colours


def label_colours(tree, dataset: str) -> tuple[dict[int, str], dict[int, tuple]]:
    """(label id -> readable name, label id -> (r, g, b)) from the dataset's label set; the
    colours where it has them (Cityscapes, Mapillary). The label set is the one the tree
    names (``hierarchy.vocabulary.dataset_labelset``: a file beside the tree's file first).
    Both empty when it cannot be loaded."""
    from dsspn_cli.hierarchy.vocabulary import dataset_labelset, label_display_names

    labelset = dataset_labelset(tree, dataset)
    if labelset is None:
        return {}, {}
    names, colours = label_display_names(tree, dataset, labelset), {}
    for label in labelset.labels:
        colour = label.extra.get("color")
        if isinstance(colour, (list, tuple)) and len(colour) == 3:
            colours[label.id] = tuple(int(c) for c in colour)
    return names, colours


# ----------------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class ClassChoice:
    """The classes a prediction is restricted to (``--classes``, ``--labelset``): their
    concepts, names and the ids written for them, and the id of 'none of them'.

    ``concept_sets`` holds every class's concepts (a class may be a union: 'motor vehicle'
    is car, motorcycle and truck). ``mappings``: how each class was named
    (``dsspn_cli.hierarchy.vocabulary.ClassMapping``)."""

    names: tuple[str, ...]
    ids: tuple[int, ...]
    other: int
    concept_sets: tuple[frozenset[int], ...]
    colours: dict = field(default_factory=dict, compare=False, hash=False)   # id -> rgb
    mappings: tuple = field(default=(), compare=False, hash=False)

    @property
    def sets(self) -> tuple[frozenset[int], ...]:
        """The concepts of each class, what a ``Query`` takes (``concept_sets``)."""
        return self.concept_sets

    def value_ids(self, hedged_concepts: int = 0) -> list[int]:
        """The id written for each value of a class map: class k's id, then 'other' (the
        last class value); hedged, ``hedged_concepts`` more values, a pixel stopped at a
        concept above some classes, written as 'other' too."""
        return list(self.ids) + [self.other] * (1 + hedged_concepts)


def choose_classes(tree, names: str | None = None, labelset: str | Path | None = None,
                   wn=None) -> ClassChoice | None:
    """``person,vehicle,sky`` (ids 0, 1, 2..., other 255), or a label-set file (its ids, its
    names, its colours; other: its ignore value), each class named as the vocabulary
    mapping names it (``hierarchy.vocabulary.vocabulary_for``: a concept, a synset, any
    WordNet word; a class below or above the tree's concepts). A class that names nothing,
    or two on one concept, is one line with the fix. A class may be several concepts (a
    union; the caller runs ``concept_sets``)."""
    from dsspn_cli.hierarchy.vocabulary import vocabulary_for

    if names is None and labelset is None:
        return None
    if names is not None and labelset is not None:
        raise UserError("--classes and --labelset: give one of them")
    colours: dict = {}
    vocabulary, chosen, catch_all = vocabulary_for(tree, names, labelset, wn, strict=True)
    if chosen is None:
        count = len(vocabulary.classes)
        ids, other = list(range(count)), 255 if count < 255 else count
    else:
        labels = [label for label in chosen.mapped_labels if label is not catch_all]
        ids = [label.id for label in labels]
        # Its everything-else class (VOC's background) is written where no other class is.
        other = catch_all.id if catch_all is not None else chosen.ignore_index
        for label in labels:
            where_ = f"{labelset}: label '{label.name}' (id {label.id})"
            if label.id < 0:        # it would be written as 2**8 or 2**16 minus it: 255 for -1
                raise UserError(f"{where_}: a negative id cannot be written in a label map; "
                                "give it an id from 0 up, other than the label set's "
                                f"ignore_index ({chosen.ignore_index}, written for 'other'), "
                                "or mark it 'ignore: true'")
            colour = label.extra.get("color")
            if isinstance(colour, (list, tuple)) and len(colour) == 3:
                colours[label.id] = tuple(int(c) for c in colour)
    return ClassChoice(vocabulary.names, tuple(ids), other, vocabulary.concept_ids(tree),
                       colours, vocabulary.classes)


def dataset_labels(model, dataset: str) -> np.ndarray:
    """Concept id -> the dataset's label id written for it (``concepts_to_labels``: its own
    label, else its nearest labelled ancestor's, else the dataset's ignore index), int64."""
    import torch

    masking = model.masking
    concepts = torch.arange(len(masking.table.concepts), device=masking.concept_label.device)
    return model.concepts_to_labels(concepts, dataset).cpu().numpy().astype(np.int64)


@dataclass
class Predictor:
    """A loaded model and everything fixed across images: the dataset or classes, the
    inference path, and, per value of a predicted map, its name, id, colour and tree path."""

    model: object
    tree: object
    dataset: str | None = None
    level: int | None = None
    tile: int = TILE
    device: object = None
    precision: str = "fp32"
    classes: ClassChoice | None = None
    hedge: float | None = None            # the hedging threshold (``model.hedging``)
    hedge_source: dict = field(default_factory=dict)   # its target and calibration, if any
    inference: Inference = field(init=False)
    colours: np.ndarray = field(init=False)            # value -> colour
    value_label: np.ndarray = field(init=False)        # value -> its label id, -1 none
    label_lookup: np.ndarray = field(init=False)       # value -> id in NAME_labels.png
    value_names: list = field(init=False)              # value -> name
    value_concepts: list = field(init=False)           # value -> its concepts' names
    value_paths: list = field(init=False)              # value -> path in the tree
    value_depth: np.ndarray = field(init=False)        # value -> depth it stopped at
    sixteen_bit: bool = field(init=False)

    def __post_init__(self):
        sets = self.classes.sets if self.classes is not None else None
        self.inference = Inference(self.model, self.dataset, self.level, self.tile,
                                   self.precision, self.device, sets, self.hedge)
        names = self.tree.names
        palette = concept_palette(len(names))
        self.value_names = list(names)
        self.value_concepts = [[n] for n in names]
        self.value_paths = [self.tree.ancestors(n) + [n] for n in names]
        depth = [len(path) - 1 for path in self.value_paths]
        self.value_depth = np.array(depth, dtype=np.int64)
        if self.classes is not None:
            choice = self.classes
            # Value k is class k; value n (the last) is 'other'.
            self.value_names = list(choice.names) + ["other"]
            self.value_concepts = [[names[c] for c in sorted(s)] for s in sets] + [[]]
            self.value_paths = [shared_path([self.value_paths[c] for c in sorted(s)])
                                for s in sets] + [[]]
            self.value_label = np.array(choice.value_ids(), dtype=np.int64)
            # A union takes the colour of its first concept (a label set's own where given).
            self.colours = np.array([choice.colours.get(i, palette[min(s)]) for i, s in
                                     zip(choice.ids, sets)] + [(0, 0, 0)], dtype=np.uint8)
            # A class's depth is its concept's (a union's: its shallowest); 'other' has none.
            self.value_depth = np.array([min(depth[c] for c in s) for s in sets] + [-1],
                                        dtype=np.int64)
            if self.hedge is not None:
                # Hedged, value n + 1 + concept is a pixel that stopped at that concept,
                # above some classes (``MaskingTensors.hedged_vocabulary``): shown as the
                # concept, written with the 'other' id (the classes have none for it).
                self.value_names += list(names)
                self.value_concepts += [[n] for n in names]
                self.value_paths += [self.tree.ancestors(n) + [n] for n in names]
                self.value_label = np.array(choice.value_ids(len(names)), dtype=np.int64)
                self.colours = np.concatenate([self.colours, palette])
                self.value_depth = np.concatenate([self.value_depth, depth])
            self.label_lookup = self.value_label
            self.sixteen_bit = int(self.value_label.max()) > 255
            return
        if self.dataset is None:
            self.value_label = np.full(len(names), -1, dtype=np.int64)
            self.label_lookup = np.arange(len(names), dtype=np.int64)     # the concept ids
            self.sixteen_bit = len(names) - 1 > 255
            self.colours = palette
            return
        masking = self.model.masking
        d = masking.dataset_index(self.dataset)
        self.value_label = masking.concept_label_up[d].cpu().numpy().astype(np.int64)
        self.label_lookup = dataset_labels(self.model, self.dataset)
        table = masking.table.datasets[self.dataset]
        defined = [i for i, c in enumerate(table.label_to_concept) if c >= 0]
        self.sixteen_bit = max(defined + [table.ignore_index]) > 255
        label_names, by_label = label_colours(self.tree, self.dataset)
        # The dataset's own name of each concept's label ('vegetation'), the concept beside
        # it (``value_concepts``, 'plant-stuff'): the user knows the dataset's words.
        self.value_names = [label_names.get(int(label), name) if label >= 0 else name
                            for name, label in zip(names, self.value_label)]
        self.colours = palette.copy()
        for concept, label in enumerate(self.value_label):
            if label >= 0 and int(label) in by_label:
                self.colours[concept] = by_label[int(label)]

    def run(self, image: np.ndarray, confidence: bool = True):
        """The predicted map (concept ids, or class values) and confidence of an H x W x 3
        uint8 image, as numpy arrays; ``confidence=False``: None in its place, the
        confidence map left on the device (a video frame needs only the values)."""
        import torch

        values, scores = self.inference(torch.from_numpy(image))
        values = values.cpu().numpy()
        if self.classes is not None:
            values = np.where(values < 0, len(self.classes.sets), values)
        return values, scores.cpu().numpy() if confidence else None

    def labels(self, values: np.ndarray) -> np.ndarray:
        """The map written as ``NAME_labels.png``: concept ids, or the dataset's or the
        classes' ids (``label_lookup``, on the host: no trip to the model's device)."""
        return self.label_lookup[values]

    def depths(self, values: np.ndarray) -> dict[str, int]:
        """How many pixels stopped at each depth of the tree (0 = the root; a class at its
        concept's), every depth down to the deepest present; with classes, 'other' beside
        (a pixel that left them has no depth among them)."""
        found = self.value_depth[values.ravel()]
        counts = {str(d): int(n) for d, n in
                  enumerate(np.bincount(found[found >= 0], minlength=1))}
        if self.classes is not None:
            counts["other"] = int((found < 0).sum())
        return counts

    def summary(self, values: np.ndarray, confidence: np.ndarray) -> list[dict]:
        """What the map holds, most pixels first (hedged: with the depth of each)."""
        count = len(self.value_names)
        total = values.size
        counts = np.bincount(values.ravel(), minlength=count)
        sums = np.bincount(values.ravel(), weights=confidence.ravel().astype(np.float64),
                           minlength=count)
        present = sorted(np.flatnonzero(counts), key=lambda v: (-counts[v], v))
        named = self.dataset is not None or self.classes is not None
        hows = [m.how for m in self.classes.mappings] if self.classes is not None else []
        rows = []
        for value in present:
            label = int(self.value_label[value])
            row = {
                "id": int(value), "name": self.value_names[value],
                "label": label if named and label >= 0 else None,
                "concepts": self.value_concepts[value],
                "pixels": int(counts[value]),
                "share": round(float(counts[value]) / total, 6),
                "path": self.value_paths[value],
                "mean_confidence": round(float(sums[value] / counts[value]), 4),
            }
            if value < len(hows):       # how the class was matched: same, below, coarser
                row["how"] = hows[value]
            if self.hedge is not None and self.value_depth[value] >= 0:
                row["depth"] = int(self.value_depth[value])
            rows.append(row)
        return rows

    def write(self, job: ImageJob, image: np.ndarray, out: Path,
              as_json: bool = False, page=None) -> list[Path]:
        """Predict ``image`` (``job``'s file, decoded) and write its outputs; and, given a
        ``PredictionPages`` (``--html``), what its page needs."""
        from PIL import Image

        concepts, confidence = self.run(image)
        labels = self.labels(concepts)
        colour = self.colours[concepts]
        overlay = blend(image, colour)
        rows = self.summary(concepts, confidence)
        base = out / job.stem

        def write(suffix: str, data: bytes) -> Path:
            # Nothing below the output folder (OUT/<city>) is followed if a link.
            return atomic_write_bytes(f"{base}{suffix}", data, within=out)

        written = [
            write("_labels.png", self.label_png(labels)),
            write("_color.png", _png(Image.fromarray(colour))),
            write("_overlay.png", _png(Image.fromarray(overlay))),
            write("_legend.png", legend_png(rows, self.colours, job.image.name
                                            if self.hedge is None else
                                            f"{job.image.name} (hedged at {self.hedge:g})")),
        ]
        if as_json:
            doc = {"image": str(job.image), "dataset": self.dataset,
                   "size": [int(image.shape[0]), int(image.shape[1])], "concepts": rows}
            if self.hedge is not None:
                doc["hedge"] = {"threshold": self.hedge, **self.hedge_source}
                doc["stopped_at_depth"] = self.depths(concepts)
            written.append(write(".json", (json.dumps(doc, indent=1) + "\n").encode()))
        if page is not None:
            written += page.add(job.stem, job.image, image, concepts, confidence, overlay)
        return written

    def pages(self, out: Path, model: str = ""):
        """``--html``: the writer of the page of this prediction's images, its nodes the
        tree's concepts (and the classes of several concepts, and 'other', with
        ``--classes``) named and coloured as this predictor writes them."""
        from dsspn_cli.pages.predictions import PredictionPages, page_nodes

        nodes, value_nodes = page_nodes(self.tree, concept_palette(len(self.tree)),
                                        self.colours, self.value_names, self.value_label,
                                        self.classes, self.dataset,
                                        hedged=self.hedge is not None)
        mode = ("classes" if self.classes is not None else
                "dataset" if self.dataset is not None else "concepts")
        return PredictionPages(out, nodes, value_nodes, {
            "mode": mode, "dataset": self.dataset, "level": self.level, "model": model})

    def label_png(self, labels: np.ndarray) -> bytes:
        """``NAME_labels.png``'s bytes: 8-bit, or 16-bit when the ids exceed 255."""
        from PIL import Image

        return _png(Image.fromarray(labels.astype(np.uint16 if self.sixteen_bit else np.uint8)))


def blend(image: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """The overlay: photo and colour map 50/50."""
    return ((image.astype(np.uint16) + colour) // 2).astype(np.uint8)


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def legend_text(row: dict) -> str:
    """A legend line's name: the dataset's label or the class, with its id, and the tree's
    concepts beside when named otherwise ('vegetation [21] (plant-stuff)', 'motor vehicle
    [0] (car, motorcycle, truck)'); a concept alone without a dataset; hedged, the depth
    it stopped at after it ('vehicle - depth 2')."""
    name = row["name"]
    depth = f" - depth {row['depth']}" if row.get("depth") is not None else ""
    if row.get("label") is None:
        return name + depth
    text = f"{name} [{row['label']}]"
    concepts = ", ".join(row.get("concepts") or [])
    if concepts and concepts.lower() != name.lower():
        text += f" ({concepts})"
    return text + depth


def legend_png(rows: list[dict], colours: np.ndarray, title: str) -> bytes:
    """A small figure: one line per class present (swatch, name, pixel share); with a
    dataset or classes, their name and id, then the tree's concepts when named otherwise
    (``legend_text``)."""
    from matplotlib.patches import Rectangle

    from dsspn_cli.figures import new_figure, png_bytes

    shown = rows[:LEGEND_ROWS]
    rest = rows[LEGEND_ROWS:]
    lines = len(shown) + (1 if rest else 0)
    # The title (the image's file name) and the class names are drawn as written.
    figure = new_figure(4.0, 0.3 + 0.24 * (lines + 1))
    axes = figure.add_axes([0, 0, 1, 1])
    axes.set_xlim(0, 1)
    axes.set_ylim(lines + 1.2, 0)
    axes.axis("off")
    axes.text(0.03, 0.6, title, fontsize=8, weight="bold", va="center")
    for i, row in enumerate(shown, start=1):
        y = i + 0.5
        rgb = colours[row["id"]] / 255.0
        axes.add_patch(Rectangle((0.03, y - 0.35), 0.07, 0.7, facecolor=rgb,
                                 edgecolor="#555555", linewidth=0.5))
        axes.text(0.13, y, legend_text(row), fontsize=7, va="center")
        axes.text(0.97, y, f"{100 * row['share']:.1f}%", fontsize=7, va="center", ha="right")
    if rest:
        share = sum(row["share"] for row in rest)
        axes.text(0.13, lines + 0.5, f"{len(rest)} more", fontsize=7, va="center",
                  style="italic")
        axes.text(0.97, lines + 0.5, f"{100 * share:.1f}%", fontsize=7, va="center",
                  ha="right")
    return png_bytes(figure)


# ----------------------------------------------------------------------------------- run


@dataclass
class PredictReport:
    out: Path
    dataset: str | None
    images: list[Path] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    device: str = "cpu"
    videos: list = field(default_factory=list)        # a VideoReport per video
    hedge: float | None = None              # the hedging threshold used
    hedge_source: dict = field(default_factory=dict)


def predict(checkpoint: str | Path, inputs: Sequence[str | Path], *,
            dataset: str | None = None, out: str | Path = "predictions",
            level: int | None = None, as_json: bool = False, tile: int = TILE,
            device: str = "auto", precision: str = "fp32", workers: int = 2,
            classes: str | None = None, labelset: str | Path | None = None,
            track: Track | None = None, html: bool = False, every: int = 1,
            frames: str | Path | None = None, hedge: float | None = None,
            hedge_threshold: float | None = None,
            calibration: str | Path | None = None) -> PredictReport:
    """Predict every image of ``inputs`` (files and folders) with the checkpoint's model and
    write the outputs into ``out``; ``workers`` processes decode the images.
    ``track(items, total, what)`` may wrap the image loop (a progress bar). ``html``: also
    the page of the images, ``out/index.html`` (``dsspn_cli.pages.predictions``).
    Videos among the inputs (``video.split_videos``) are predicted one frame in ``every``
    into ``OUT/<stem>_overlay.mp4``, their label maps into ``frames`` if given; ``track``
    then also wraps their frame loops, with ``unit="frames"``.

    Hedged prediction: ``hedge_threshold`` (a confidence, 0 to 1) or ``hedge`` (a target
    accuracy, its threshold read from ``calibration``, default the checkpoint's
    ``CKPT.hedging.json`` that ``evaluate --hedge`` writes): each pixel stops at the deepest
    concept of its path whose confidence exceeds the threshold."""
    from dsspn_cli.engine.hedging import calibrated_threshold, calibration_path
    from dsspn_cli.model.hedging import check_threshold

    torch_device = check_options(tile=tile, level=level, device=device, precision=precision)
    hedge_threshold = check_threshold(hedge_threshold)
    if hedge is not None and hedge_threshold is not None:
        raise UserError(f"--hedge {hedge:g} and --hedge-threshold {hedge_threshold:g}: give "
                        "a target accuracy or a threshold, not both")
    if calibration is not None and hedge is None:
        raise UserError("--calibration goes with --hedge TARGET: add it")
    out = check_output(out, folder=True)
    videos, image_inputs = split_videos(inputs)
    jobs = find_images(image_inputs) if image_inputs or not videos else []
    if html and not jobs:
        raise UserError(f"--html: the page shows images, and {videos[0]} is a video (its "
                        "result is the overlay video with its legend): drop --html, or add "
                        "images")
    check_images(jobs, out, as_json, reads=[*inputs, checkpoint, labelset, calibration],
                 html=html)
    clips = prepare_videos(videos, out, every=every, frames=frames,
                           reads=[*inputs, checkpoint, labelset, calibration])
    from dsspn_cli.data.loading import reading
    from dsspn_cli.engine.checkpoint import load_model
    from dsspn_cli.engine.infer import ImageFiles, image_loader

    model, _table, tree, _config = load_model(checkpoint, torch_device)
    if dataset is not None:
        dataset = tree.dataset_name(dataset)
        tree.check_level(dataset, level)
    choice = choose_classes(tree, classes, labelset)
    source: dict = {}
    if hedge is not None:
        hedge_threshold, source = calibrated_threshold(
            calibration or calibration_path(checkpoint), checkpoint, hedge, dataset)
        source = {"target": hedge, **source}
    predictor = Predictor(model, tree, dataset, level, tile, torch_device, precision, choice,
                          hedge_threshold, source)
    report = PredictReport(out, dataset, device=str(torch_device), hedge=hedge_threshold,
                           hedge_source=source)
    page = predictor.pages(out, Path(checkpoint).name) if html and jobs else None
    loader = image_loader(ImageFiles([job.image for job in jobs]), range(len(jobs)), workers,
                          torch_device)
    with reading(loader) as items:
        loop: Iterable[dict] = items
        if track is not None and len(jobs) > 1:
            loop = track(loop, len(jobs), "predicting")
        for item in loop:
            if "bad" in item or "error" in item:
                raise UserError(item.get("error") or item["bad"])
            job = jobs[item["index"]]
            report.files += predictor.write(job, item["image"].numpy(), out, as_json, page)
            report.images.append(job.image)
    if page is not None:
        report.files.append(page.finish())
    for clip in clips:
        report.videos.append(predict_video(predictor, clip, out, every=every, frames=frames,
                                           track=track))
        report.files.append(report.videos[-1].output)
    return report


__all__ = ["predict", "predict_array", "tile_spans", "find_images", "choose_classes",
           "ClassChoice", "concept_palette", "label_colours", "legend_png", "legend_text",
           "blend", "Predictor", "PredictReport", "ImageJob", "SUFFIXES", "MIN_TILE"]
