"""The dataset formats by name, and the label set each one reads with."""

from __future__ import annotations

from pathlib import Path

from dsspn_cli.data.ade20k import ADE20K
from dsspn_cli.data.camvid import CamVid
from dsspn_cli.data.cityscapes import Cityscapes
from dsspn_cli.data.coco_stuff import CocoStuff, CocoStuffJson
from dsspn_cli.data.common import DatasetFormat
from dsspn_cli.data.folder import Folder
from dsspn_cli.data.kitti import KITTI
from dsspn_cli.data.mapillary import MapillaryVistas, MapillaryVistasV2
from dsspn_cli.data.pascal_context import PascalContext, PascalContext60
from dsspn_cli.data.scannet import ScanNet
from dsspn_cli.data.voc import PascalVOC
from dsspn_cli.data.wilddash import WildDash
from dsspn_cli.errors import UserError

FORMATS: dict[str, type[DatasetFormat]] = {
    "cityscapes": Cityscapes,
    "ade": ADE20K,
    "coco": CocoStuff,
    "coco-json": CocoStuffJson,
    "mapillary": MapillaryVistas,
    "mapillary-v2": MapillaryVistasV2,
    "folder": Folder,
    # MSeg's held-out test sets: read, checked and scored, never trained on by default.
    "voc": PascalVOC,
    "pascal-context": PascalContext,
    "pascal-context-60": PascalContext60,
    "camvid": CamVid,
    "kitti": KITTI,
    "wilddash": WildDash,
    "scannet": ScanNet,
}
ALIASES = {"ade20k": "ade", "coco-stuff": "coco", "cocostuff": "coco", "vistas": "mapillary",
           "mapillary-vistas": "mapillary", "vistas-v2": "mapillary-v2", "city": "cityscapes",
           "pascal-voc": "voc", "voc2012": "voc", "pascal-voc-2012": "voc",
           "pascal-context-59": "pascal-context", "pc59": "pascal-context",
           "pc60": "pascal-context-60", "camvid-11": "camvid", "kitti-semantics": "kitti",
           "wilddash-v1": "wilddash", "scannet-20": "scannet", "scannet20": "scannet"}


def canonical(name: str) -> str | None:
    """A dataset format's name (any case, or an alias) -> its key in ``FORMATS``; None for an
    unknown one (each caller words its own error)."""
    key = ALIASES.get(name.lower(), name.lower())
    return key if key in FORMATS else None


def get_format(name: str) -> DatasetFormat:
    key = canonical(name)
    if key is None:
        raise UserError(f"--format {name}: unknown dataset format; use one of "
                        f"{', '.join(FORMATS)}")
    return FORMATS[key]()


def labelset_for(fmt: DatasetFormat, root: Path):
    """The label set of a dataset on disk: the built-in one, or the folder's own file."""
    from dsspn_cli.hierarchy.labelset import load_labelset

    if isinstance(fmt, Folder):
        return load_labelset(str(Folder.labelset_path(root)))
    return load_labelset(fmt.labelset)


def check_root(root: Path) -> Path:
    import stat

    from dsspn_cli.files import stat_path

    root = Path(root).expanduser()
    found = stat_path(root, "read the dataset")
    if found is None:
        raise UserError(f"{root}: no such folder; give the dataset's root folder")
    if not stat.S_ISDIR(found.st_mode):
        raise UserError(f"{root}: is a file; give the dataset's root folder")
    return root
