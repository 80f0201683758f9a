"""What every dataset format shares: a sample (image + label file), reading them, the registry.

A format reads one official on-disk layout and returns label maps in its label set's id space
(Cityscapes label ids, ADE20K 1-150, COCO-Stuff 0-181, ...). Turning label ids into tree
concepts is the masking table's job (``dsspn_cli.data.targets``), so formats know nothing of
the tree. These modules use numpy and Pillow only, never torch: ``dsspn data check`` stays fast.
"""

from __future__ import annotations

import os
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dsspn_cli.errors import UserError, one_line, os_problem

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


MAX_PIXELS_ENV = "DSSPN_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 500_000_000       # 22,000 x 22,000: a huge aerial photo, not a bomb
_16_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_LABEL_MODES = ("L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N")
_quiet = threading.Lock()
_PILLOW = r"PIL(\.|$)"                  # Pillow's modules, which issue its warnings


def max_pixels() -> int | None:
    """The most pixels an image may have (``DSSPN_MAX_IMAGE_PIXELS``; 0: no limit)."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(text)
    except ValueError:
        raise UserError(f"{MAX_PIXELS_ENV}={text[:40]!r}: give a whole number of pixels (0 for "
                        "no limit)") from None
    return value if value > 0 else None


def _quiet_pillow() -> None:
    """Pillow's warnings (corrupt EXIF, odd palettes, malformed MPO...) never reach the
    user raw: a file is read, or it is a BadFile that says why. Pillow's own pixel limit is
    replaced by ours (checked from the header, with the size in the message). Checked at
    every read: a caller (a test runner) may have reset the warning filters since."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    with _quiet:
        if not any(action == "ignore" and module is not None and module.pattern == _PILLOW
                   for action, _, _, module, _ in warnings.filters):
            warnings.filterwarnings("ignore", module=_PILLOW)


@contextmanager
def _opened(path: Path, what: str):
    """``Image.open`` of one file, for the one reader of images and label maps below: any
    failure there or in the caller's decoding (a missing file, a folder, a name too long,
    unknown bytes, a truncated stream, too many pixels) is a BadFile naming the file."""
    from PIL import Image, UnidentifiedImageError

    _quiet_pillow()
    limit = max_pixels()
    try:
        with Image.open(path) as image:
            if limit is not None and image.width * image.height > limit:
                raise BadFile(path, f"{what} of {image.width}x{image.height} pixels is over the "
                              f"limit of {limit:,} pixels (a decompression bomb, or a very "
                              f"large photo); set {MAX_PIXELS_ENV} to raise it (0: no limit)")
            yield image
    except BadFile:
        raise
    except FileNotFoundError:
        raise BadFile(path, "missing") from None
    except UnidentifiedImageError:
        kind = _signature(path)
        if kind is None:
            raise BadFile(path, f"unreadable {what} (not in an image format Pillow reads); give "
                          "PNG or JPEG") from None
        raise BadFile(path, f"unreadable {what} (a truncated or damaged {kind}: its header "
                      "cannot be read); replace it with a good copy") from None
    except OSError as exc:
        if exc.errno is None:            # a decoder's complaint, not the system's
            raise BadFile(path, f"unreadable {what} (truncated or damaged: {_detail(exc)}); "
                          "replace it with a good copy") from None
        raise BadFile(path, f"cannot read the {what}: {os_problem(exc)}") from None
    except MemoryError:
        raise BadFile(path, f"unreadable {what} (too large to decode in this machine's "
                      "memory)") from None
    except Exception as exc:             # zlib.error, SyntaxError, struct.error, EOFError...
        raise BadFile(path, f"unreadable {what} (truncated or damaged: {_detail(exc)}); "
                      "replace it with a good copy") from None


def _detail(exc: Exception) -> str:
    text = one_line(str(exc))
    return f"{type(exc).__name__}: {text[:100]}" if text else type(exc).__name__


# The first bytes of the image formats people give: a file that starts like one but cannot
# be opened is damaged, not of another format.
_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF8": "GIF",
               b"BM": "BMP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"RIFF": "WebP"}


def _signature(path: Path) -> str | None:
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError:
        return None
    return next((kind for sign, kind in _SIGNATURES.items() if head.startswith(sign)), None)


def _orientation(image) -> int:
    """The EXIF orientation (1-8) a photo is to be shown in; 1 when it has none. Read from
    the header: a PNG whose eXIf chunk comes after the pixels counts as having none (finding
    it would decode the whole file), the same for every reader here."""
    if image.format == "PNG" and "exif" not in image.info:
        return 1
    try:
        value = image.getexif().get(0x0112, 1)
    except Exception:                    # damaged EXIF: show the pixels as stored
        return 1
    return value if value in _TRANSPOSE else 1


def _transpose(value: int):
    from PIL import Image

    return {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
            4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
            6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}[value]   # ImageOps.exif_transpose's table


_TRANSPOSE = range(2, 9)
_TURNED = (5, 6, 7, 8)                   # orientations that swap width and height


def read_image(path: Path) -> np.ndarray:
    """A photo as a HxWx3 uint8 array, turned upright by its EXIF orientation (as viewers
    and annotation tools show it); 16-bit photos are scaled to 8 bit, not clipped. BadFile
    if it cannot be decoded."""
    with _opened(path, "image") as image:
        orientation = _orientation(image)
        image.load()
        if orientation != 1:
            image = image.transpose(_transpose(orientation))
        if image.mode in _16_BIT:
            values = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
            grey = ((values * 255 + 32767) // 65535).astype(np.uint8)
            return np.repeat(grey[..., None], 3, axis=2)
        if image.mode == "F":
            raise BadFile(path, "unreadable image (floating-point pixels, mode F); save it as "
                          "an 8- or 16-bit image")
        return np.asarray(image.convert("RGB"))


def read_label_png(path: Path) -> np.ndarray:
    """A label map as a HxW int32 array of its stored values (mode L, P or I;16: 16-bit maps
    keep their values), never turned by EXIF: a label map's pixels are its ids as stored."""
    with _opened(path, "label map") as image:
        image.load()
        if image.mode == "1":
            image = image.convert("L")
        if image.mode not in _LABEL_MODES:
            raise BadFile(path, f"label maps must be single-channel (L, P or I;16), this one "
                          f"is {image.mode}; save the class ids, not a colour rendering")
        return np.asarray(image).astype(np.int32)


def read_label_within(path: Path, most: int, what: str, fix: str) -> np.ndarray:
    """``read_label_png``, every stored value from 0 to ``most``: for readers that turn the
    values into others (ScanNet's NYU40 ids, Pascal Context's shifted ids), so that a value
    out of range is caught as stored, not after it became another class. BadFile naming the
    first few values outside, as ``what`` they are not, and the ``fix``."""
    values = read_label_png(path)
    bad = np.unique(values[(values < 0) | (values > most)])
    if bad.size:
        raise BadFile(path, f"values {', '.join(map(str, bad[:5].tolist()))} are not {what}; "
                      f"{fix}")
    return values


def image_header(path: Path) -> tuple[int, int, int]:
    """(height, width, EXIF orientation) of a photo as ``read_image`` returns it, from the
    header alone."""
    with _opened(path, "image") as image:
        orientation = _orientation(image)
        if orientation in _TURNED:
            return image.width, image.height, orientation
        return image.height, image.width, orientation


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of a photo as ``read_image`` returns it, without decoding the pixels."""
    return image_header(path)[:2]


def size_mismatch(label: Path, label_shape, image: Path, image_shape) -> str:
    """The problem of a label map whose size differs from its photo's; when the photo's EXIF
    orientation turns it and the label map fits the stored pixels, it says so."""
    height, width = label_shape[:2]
    problem = (f"size {width}x{height} differs from its image {image.name} "
               f"({image_shape[1]}x{image_shape[0]})")
    try:
        shown_h, shown_w, orientation = image_header(image)
    except BadFile:
        return problem
    if orientation in _TURNED and (shown_w, shown_h) == (height, width):
        problem += (f" as shown upright by its EXIF orientation {orientation}; the label map "
                    "fits the stored pixels: remove the image's orientation tag (exiftool "
                    "-Orientation=1 -n), or turn the label map to match")
    return problem


class DatasetFormat:
    """Base of the format readers. Subclasses set the class attributes and ``samples``."""

    name = ""
    labelset = ""                     # the built-in label set this layout uses
    splits: dict[str, str] = {}       # user split name -> folder name
    layout = ""                       # one line shown when the layout is not found
    # MSeg's held-out test sets (VOC, CamVid, ...) are scored, never trained on, and are not
    # datasets of the shipped tree; test_split is the split such a set is scored on.
    held_out = False
    test_split = "val"

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
                 extra: dict | None = None, not_images: tuple[str, ...] = ()) -> list[Sample]:
    """Every image of ``image_dir`` with the label map of ``label_dir`` whose name has the
    same key, and every label map without an image (``extra['missing'] = 'image'``, at the
    image path it would have). The key is a name without its tail (Cityscapes'
    '_leftImg8bit.png' / '_gtFine_labelIds.png'), or without its suffix when no tail is given
    ('x.jpg' / 'x.png'); names without the tail are not part of the layout, nor are names
    ending in one of ``not_images`` (label maps beside the images, as WildDash has them)."""

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
        if not_images and image.name.endswith(not_images):
            continue
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


def dataset_base(root: Path, tops: tuple[str, ...], marker: str) -> Path:
    """Where a layout starts: ``root/top`` for the first of ``tops`` that holds ``marker``,
    else ``root`` itself. Datasets unpack with or without their top folders (VOCdevkit/VOC2012,
    CamVid, scannet_frames_25k): either is accepted as ROOT."""
    for top in tops:
        if (root / top / marker).exists():
            return root / top
    return root


def read_split_list(path: Path) -> list[str]:
    """The ids of a split list file: the first field of each line (VOC's ImageSets lists one
    image id a line, ScanNet's scannetv2_*.txt one scene), blank lines skipped."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file of ids; use the split list shipped with the "
                        "dataset") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read the split list: {os_problem(exc)}") from None
    return [line.split()[0] for line in text.splitlines() if line.strip()]


class SplitListFormat(DatasetFormat):
    """A layout whose splits are lists of image ids (``<lists>/<split>.txt``), with the images
    in one folder and the label maps in another, named by id: Pascal VOC and Pascal Context."""

    tops: tuple[str, ...] = ()        # the dataset's own top folders, when ROOT is above them
    lists = ""                        # the folder of the split lists, under the top
    images = "JPEGImages"
    labels = ""
    image_suffix = ".jpg"

    def samples(self, root: Path, split: str) -> list[Sample]:
        base = dataset_base(root, self.tops, self.images)
        listing = base / self.lists / f"{self.folder(split)}.txt"
        if not listing.is_file():
            if base == root and not (root / self.images).is_dir():   # no layout at all
                listing = root / self.tops[0] / self.lists / listing.name
            raise self.missing_layout(root, listing)
        found = []
        for key in dict.fromkeys(read_split_list(listing)):    # in list order, once each
            label = base / self.labels / f"{key}.png"
            found.append(Sample(base / self.images / f"{key}{self.image_suffix}",
                                label if label.is_file() else None, key))
        return found
