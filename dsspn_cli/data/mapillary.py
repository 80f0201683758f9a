"""Mapillary Vistas: {training,validation}/images/*.jpg with
{training,validation}/v1.2/labels/*.png (v2.0: v2.0/labels) and config_v1.2.json."""

from __future__ import annotations

import json
from pathlib import Path

from dsspn_cli.data.common import DatasetFormat, Sample, pair_by_stem
from dsspn_cli.errors import UserError


class MapillaryVistas(DatasetFormat):
    name = "mapillary"
    labelset = "mapillary"
    version = "1.2"
    splits = {"train": "training", "val": "validation"}

    @property
    def layout(self) -> str:
        return (f"{{training,validation}}/images/*.jpg + {{training,validation}}/v{self.version}"
                f"/labels/*.png + config_v{self.version}.json")

    def samples(self, root: Path, split: str) -> list[Sample]:
        folder = self.folder(split)
        image_dir = root / folder / "images"
        label_dir = root / folder / f"v{self.version}" / "labels"
        if not image_dir.is_dir():
            raise self.missing_layout(root, image_dir)
        self.check_config(root)
        return pair_by_stem(image_dir, label_dir)

    def check_config(self, root: Path) -> None:
        """The dataset's config must list the label set's names in id order."""
        from dsspn_cli.hierarchy.labelset import load_labelset

        path = root / f"config_v{self.version}.json"
        if not path.is_file():
            return       # the config is optional; the label set is the reference
        try:
            labels = json.loads(path.read_text(encoding="utf-8"))["labels"]
            names = [entry["name"] for entry in labels]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            raise UserError(f"{path}: malformed config (no 'labels' list of names); use the "
                            "config file shipped with the dataset") from None
        expected = [label.name for label in load_labelset(self.labelset).labels]
        if names != expected:
            where = next((i for i, (a, b) in enumerate(zip(names, expected)) if a != b),
                         min(len(names), len(expected)))
            raise UserError(f"{path}: labels differ from Mapillary Vistas v{self.version} at id "
                            f"{where}; use --format mapillary-v2 for v2.0 data or the official "
                            "config")


class MapillaryVistasV2(MapillaryVistas):
    name = "mapillary-v2"
    labelset = "mapillary-v2"
    version = "2.0"
