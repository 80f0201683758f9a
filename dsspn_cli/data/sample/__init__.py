"""Built-in sample data: small procedural datasets in the real on-disk layouts of the four
built-in datasets (Cityscapes, ADE20K, COCO-Stuff 164k, Mapillary Vistas v1.2).

The images are drawn, not photographed. Each scene is first rendered as a per-pixel map of
concepts of the concept tree (mostly leaves: 'bicyclist', 'armchair', 'lane marking -
general'...), and every dataset then labels it at its own granularity and with its own ids:
a pixel of concept ``c`` gets the dataset's label of the nearest concept among ``c`` and its
ancestors that the dataset labels (Cityscapes says 'rider' for a bicyclist, ADE20K 'animal'
for a cat, COCO-Stuff 'chair' for an armchair), or the dataset's ignore value when none does.

Appearance follows the tree, so that learning the hierarchy helps: every concept's colour is
derived from its parent's (a hue per top-level group, children at small hue and brightness
offsets), so siblings look alike and are told apart by finer cues: a texture chosen by the
concept's place among its siblings (stripes, dots, checks, grain...) and shape (cars are low
boxes on two wheels, trucks a cab and a tall cargo box, buses long boxes with a row of
windows; cats, dogs, horses and cows are bodies of different proportions on legs of different
lengths). Each image gets its own lighting, colour cast and noise.

Scenes: streets (all four datasets), rooms and landscapes (ADE20K and COCO-Stuff only).

Layouts written under ``OUT`` (``write_sample_data``):

- ``cityscapes/leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png`` and
  ``cityscapes/gtFine/{train,val}/<city>/..._gtFine_labelIds.png`` / ``_labelTrainIds.png``;
- ``ade20k/ADEChallengeData2016/{images,annotations}/{training,validation}/ADE_*_<n>.jpg|png``;
- ``coco-stuff/images/{train2017,val2017}/<id>.jpg``,
  ``coco-stuff/stuffthingmaps_trainval2017/{train2017,val2017}/<id>.png`` and
  ``coco-stuff/annotations/{stuff,instances}_{train2017,val2017}.json``;
- ``mapillary/{training,validation}/{images,v1.2/labels}/<key>.jpg|png`` and
  ``mapillary/config_v1.2.json``;
- held-out test sets, drawn the same way from seeds of their own, labelled in their own
  classes and never trained on (``sample_datasets`` leaves them out):
  ``held-out/camvid/{test,testannot}/<seq>_<frame>.png`` (CamVid, 11 classes) and
  ``held-out/voc/VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,ImageSets}`` (Pascal VOC 2012).

The COCO JSON reproduces the PNG label maps exactly (``layouts/coco_stuff.py`` says how).

The package: ``concepts`` (the concepts drawn, their colours and labels), ``shapes`` (polygons
and the objects made of them), ``canvas`` (painting and rendering a scene), ``scenes`` (the
street, indoor and landscape scenes, and the seeding of each image), ``layouts`` (one writer a
dataset layout); here, the checks and the writing of a whole sample.

Nothing here imports torch.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from dsspn_cli.data.sample.concepts import (
    CONCEPTS,
    DATASETS,
    GROUP_DEPTH,
    HELD_OUT,
    INDOOR_CONCEPTS,
    LANDSCAPE_CONCEPTS,
    SCENE_CONCEPTS,
    STREET_CONCEPTS,
    TEXTURES,
    ConceptKit,
)
from dsspn_cli.data.sample.layouts import WRITERS
from dsspn_cli.data.sample.layouts.cityscapes import CITIES
from dsspn_cli.data.sample.layouts.mapillary import KEY_ALPHABET
from dsspn_cli.data.sample.scenes import SCENE_MIX, draw_scene
from dsspn_cli.errors import UserError, os_problem

__all__ = [
    "CITIES", "CONCEPTS", "DATASETS", "FOLDERS", "GROUP_DEPTH", "HELD_OUT", "INDOOR_CONCEPTS",
    "KEY_ALPHABET", "LANDSCAPE_CONCEPTS", "MAX_PIXELS", "MIN_SIDE", "README_MARK",
    "SCENE_CONCEPTS", "SCENE_MIX", "STREET_CONCEPTS", "TEXTURES", "WRITERS", "ConceptKit",
    "check_size", "default_sample_root", "draw_scene", "ensure_sample_data", "sample_datasets",
    "held_out_datasets", "write_sample_data",
]

# The folder of each dataset under OUT, by the tree's dataset name (held-out sets: by their
# format's name), the held-out ones apart so that nobody trains on them by mistake.
HELD_OUT_DIR = "held-out"
FOLDERS = {"cityscapes": "cityscapes", "ade": "ade20k", "coco": "coco-stuff",
           "mapillary": "mapillary", "camvid": f"{HELD_OUT_DIR}/camvid",
           "voc": f"{HELD_OUT_DIR}/voc"}
README_MARK = "dsspn sample data"


def _readme(seed, counts, size) -> str:
    return f"""{README_MARK}: procedural scenes, NOT real photos
(written by dsspn_cli.data.sample.write_sample_data, seed {seed}, {counts['train']} train and
{counts['val']} val images per dataset, {size[0]}x{size[1]} pixels).

Drawn streets, rooms and landscapes, labelled in the real on-disk layouts of four datasets so
that every loader and command can be tried without downloading anything:

  cityscapes/   leftImg8bit/ + gtFine/ (labelIds, labelTrainIds)      Cityscapes (fine)
  ade20k/       ADEChallengeData2016/images + annotations             ADE20K SceneParsing 150
  coco-stuff/   images/, stuffthingmaps_trainval2017/, annotations/   COCO-Stuff 164k
  mapillary/    training|validation/images + v1.2/labels, config      Mapillary Vistas v1.2

Each scene is drawn as a map of concepts of the dsspn concept tree, and each dataset labels it
at its own granularity with its own ids (Cityscapes 'rider' where Mapillary says 'bicyclist',
ADE20K 'animal' where COCO-Stuff says 'cat'). Colours follow the tree (siblings look alike);
textures and shapes tell siblings apart. Useful for smoke tests and demos, not for accuracy.
"""


def _held_out_readme(seed, counts, size) -> str:
    return f"""{README_MARK}: held-out test sets, procedural scenes, NOT real photos
(seed {seed}, {counts['val']} images each, {size[0]}x{size[1]} pixels).

Drawn like the four training datasets beside this folder, from seeds of their own, and labelled
in the classes of two of MSeg's held-out test sets, in their real layouts:

  camvid/   test/, testannot/, test.txt                                 CamVid, 11 classes
  voc/      VOCdevkit/VOC2012/: JPEGImages, SegmentationClass, ImageSets  Pascal VOC 2012

Never trained on: 'dsspn train' without --data reads only the four training datasets. They are
for scoring a model zero-shot, in classes it never trained on; 'dsspn data check voc --format
voc' (or camvid) reads them.
"""


MIN_SIDE = 32                   # the smallest scene the drawing routines lay out
MAX_PIXELS = 4096 * 4096        # drawing takes about 130 bytes a pixel: 2 GiB at this size


def check_size(size, option: str = "size") -> tuple[int, int]:
    """(height, width) of the sample images, within the bounds the writer works in: checked
    before anything is written."""
    try:
        height, width = (int(v) for v in size)
    except (TypeError, ValueError):
        raise UserError(f"{option} must be (height, width), got {size!r}") from None
    if height < MIN_SIDE or width < MIN_SIDE:
        raise UserError(f"{option} {height}x{width} is too small; use at least "
                        f"{MIN_SIDE}x{MIN_SIDE} pixels")
    if height * width > MAX_PIXELS:
        raise UserError(f"{option} {height}x{width} is too large for sample data (drawing "
                        f"takes about {130 * height * width / 2**30:.0f} GiB); use at most "
                        f"{MAX_PIXELS:,} pixels, like 1024x2048")
    return height, width


def write_sample_data(out, seed: int = 0, images: int = 16, size=(128, 256),
                      tree=None) -> dict:
    """Write the sample datasets under ``out``; returns ``{dataset: {split: count}}``.

    ``images`` images per dataset in train and ``max(2, images // 4)`` in val; ``size`` is
    (height, width). The same arguments give byte-identical files. Everything is written into a
    staging folder inside ``out`` and moved into place at the end, so an interrupted run leaves
    no half dataset; an earlier sample in ``out`` is replaced, other data is never overwritten.
    """
    from dsspn_cli.files import check_output

    if isinstance(images, bool) or not isinstance(images, int) or images < 1:
        raise UserError(f"images must be a positive whole number, got {images!r}")
    height, width = check_size(size)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise UserError(f"seed must be a whole number, got {seed!r}")
    seed = int(seed)
    if tree is None:
        from dsspn_cli.hierarchy.tree import load_tree

        tree = load_tree()
    kit = ConceptKit(tree)
    counts = {"train": images, "val": max(2, images // 4)}

    out = check_output(out, folder=True)
    names = ["README.txt"] + [FOLDERS[d] for d in DATASETS] + [HELD_OUT_DIR]
    readme = out / "README.txt"
    ours = readme.is_file() and readme.read_text(errors="replace").startswith(README_MARK)
    clash = [n for n in names if (out / n).exists()]
    if clash and not ours:
        raise UserError(f"{out}: already holds {', '.join(clash)} that dsspn did not write; "
                        "choose an empty folder (sample data never overwrites other data)")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".dsspn-sample-", dir=out))
    except OSError as exc:
        raise UserError(f"{out}: cannot write: {os_problem(exc)}") from None
    finished = False
    try:
        summary = {}
        for ds in DATASETS + HELD_OUT:
            summary[ds] = WRITERS[ds](kit, staging / FOLDERS[ds], seed, counts,
                                      (height, width))
        (staging / "README.txt").write_text(_readme(seed, counts, (height, width)),
                                            encoding="utf-8")
        (staging / HELD_OUT_DIR / "README.txt").write_text(
            _held_out_readme(seed, counts, (height, width)), encoding="utf-8")
        old = staging / ".replaced"
        old.mkdir()
        for name in names:
            target = out / name
            if target.exists():
                os.replace(target, old / name)
            os.replace(staging / name, target)
        finished = True
    except OSError as exc:
        raise UserError(f"{out}: cannot write the sample data: {os_problem(exc)}") from None
    except MemoryError:
        raise UserError(f"{out}: out of memory drawing {height}x{width} images; use a smaller "
                        "--size") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not finished:         # nothing half-written, not even a folder
            shutil.rmtree(out, ignore_errors=True)
    return summary


def sample_datasets(root: str | Path | None = None) -> dict[str, str]:
    """The sample datasets under ``root`` (default: dsspn's cache), as ``{format: folder}``,
    the way training and evaluation take data: the four training datasets, never the
    held-out ones (``held_out_datasets``)."""
    root = Path(root) if root is not None else default_sample_root()
    return {dataset: str(root / FOLDERS[dataset]) for dataset in DATASETS}


def held_out_datasets(root: str | Path | None = None) -> dict[str, str]:
    """The held-out sample test sets under ``root``, as ``{format: folder}``: for scoring a
    model zero-shot, never for training."""
    root = Path(root) if root is not None else default_sample_root()
    return {dataset: str(root / FOLDERS[dataset]) for dataset in HELD_OUT}


def default_sample_root() -> Path:
    """Where training and evaluation without data find the sample data (written once)."""
    from dsspn_cli.hierarchy.wordnet import cache_dir

    return cache_dir() / "sample-data"


def ensure_sample_data(root: str | Path | None = None) -> dict[str, str]:
    """The sample datasets, written first if they are not there yet (or were written before
    the held-out sets were)."""
    root = Path(root) if root is not None else default_sample_root()
    if not (root / "README.txt").is_file() or not (root / HELD_OUT_DIR / "README.txt").is_file():
        write_sample_data(root)
    return sample_datasets(root)
