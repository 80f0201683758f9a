"""What every dataset format shares: a sample (image + label file), reading them, the registry.

A format reads one official on-disk layout and returns label maps in its label set's id space
(Cityscapes label ids, ADE20K 1-150, COCO-Stuff 0-181, ...). Turning label ids into tree
concepts is the masking table's job (``dsspn_cli.data.targets``), so formats know nothing of
the tree. These modules use numpy and Pillow only, never torch: ``dsspn data check`` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dsspn_cli.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class Sample:
    """One image and where its labels come from (a label map file, or a COCO JSON image id)."""

    image: Path
    label: Path | None
    key: str
    extra: dict = field(default_factory=dict, compare=False, hash=False)


class MissingSplit(UserError):
    """The folder of a split does not exist (a layout may ship without test labels, say)."""


class BadFile(Exception):
    """A file that cannot be used: the message names the file and the problem."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem


def read_image(path: Path) -> np.ndarray:
    """An RGB image as a HxWx3 uint8 array; BadFile if it cannot be decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise BadFile(path, "missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadFile(path, f"unreadable image ({exc.__class__.__name__}: {exc})") from None


def read_label_png(path: Path) -> np.ndarray:
    """A label map PNG as a HxW int32 array of its stored values (mode L, P or I;16)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            if image.mode == "1":
                image = image.convert("L")
            if image.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
                raise BadFile(path, f"label maps must be single-channel (L, P or I;16), this one "
                              f"is {image.mode}; save the class ids, not a colour rendering")
            return np.asarray(image, dtype=np.int32) if image.mode != "P" else np.asarray(
                image).astype(np.int32)
    except FileNotFoundError:
        raise BadFile(path, "missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadFile(path, f"unreadable label map ({exc.__class__.__name__}: {exc})") from None


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the header, without decoding the pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.height, image.width
    except FileNotFoundError:
        raise BadFile(path, "missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadFile(path, f"unreadable ({exc.__class__.__name__})") from None


class DatasetFormat:
    """Base of the format readers. Subclasses set the class attributes and ``samples``."""

    name = ""
    labelset = ""                     # the built-in label set this layout uses
    splits: dict[str, str] = {}       # user split name -> folder name
    layout = ""                       # one line shown when the layout is not found

    def folder(self, split: str) -> str:
        if split not in self.splits:
            raise UserError(f"--split {split}: {self.name} has splits "
                            f"{', '.join(self.splits)}")
        return self.splits[split]

    def samples(self, root: Path, split: str) -> list[Sample]:
        raise NotImplementedError

    def read_label(self, sample: Sample) -> np.ndarray:
        """The label map in label-set ids (HxW int32)."""
        return read_label_png(sample.label)

    def missing_layout(self, root: Path, expected: Path) -> UserError:
        return MissingSplit(f"{root}: not a {self.name} layout ({expected} is missing); "
                            f"expected {self.layout}")


def pair_by_stem(image_dir: Path, label_dir: Path, image_tail: str | None = None,
                 label_tail: str | None = None, orphan_suffix: str = ".jpg",
                 label_suffixes=(".png",), recursive: bool = False,
                 extra: dict | None = None) -> list[Sample]:
    """Every image of ``image_dir`` with the label map of ``label_dir`` whose name has the
    same key, and every label map without an image (``extra['missing'] = 'image'``, at the
    image path it would have). The key is a name without its tail (Cityscapes'
    '_leftImg8bit.png' / '_gtFine_labelIds.png'), or without its suffix when no tail is given
    ('x.jpg' / 'x.png'); names without the tail are not part of the layout."""

    def key(path: Path, tail: str | None) -> str | None:
        if tail is None:
            return path.stem
        return path.name[: -len(tail)] if path.name.endswith(tail) else None

    labels = {}
    if label_dir.is_dir():
        for label in files(label_dir, label_suffixes, recursive):
            name = key(label, label_tail)
            if name is not None:
                labels[name] = label
    found = []
    for image in files(image_dir, recursive=recursive):
        name = key(image, image_tail)
        if name is not None:
            found.append(Sample(image, labels.pop(name, None), name, dict(extra or {})))
    for name, label in labels.items():
        where = image_dir / label.parent.relative_to(label_dir)
        found.append(Sample(where / (name + (image_tail or orphan_suffix)), label, name,
                            {**(extra or {}), "missing": "image"}))
    return found


def files(folder: Path, suffixes=IMAGE_SUFFIXES, recursive: bool = False) -> list[Path]:
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern)
                  if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith("."))
