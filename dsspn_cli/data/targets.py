"""Label maps in a dataset's ids -> concept maps in the tree's ids, through the masking table
(``LabelMapper``), or kept in the dataset's own ids (``LabelIds``: zero-shot evaluation scores
a dataset the tree does not hold on its untouched ground truth).

Concept maps are int64 with -1 where pixels are ignored (unlabelled or void labels). A value
the label set does not define is an error naming the file: training skips nothing silently.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dsspn_cli.data.common import BadFile
from dsspn_cli.hierarchy.tables import IGNORE


class LabelMapper:
    def __init__(self, table, dataset: str, labelset):
        data = table.dataset(dataset)
        size = max(len(data.label_to_concept), labelset.max_id + 1, 256)
        self.lut = np.full(size, IGNORE, dtype=np.int64)
        self.lut[: len(data.label_to_concept)] = data.label_to_concept
        self._define(labelset)
        self.dataset = dataset

    def _define(self, labelset) -> None:
        """Which values the label set defines (its labels and its ignore value, which maps to
        -1)."""
        self.defined = np.zeros(len(self.lut), dtype=bool)
        for label in labelset.labels:
            if label.id >= 0:
                self.defined[label.id] = True
        if labelset.ignore_index >= 0:
            self.defined[labelset.ignore_index] = True
            self.lut[labelset.ignore_index] = IGNORE
        self.labelset = labelset

    def undefined_values(self, values: np.ndarray) -> list[int]:
        present = np.unique(values)
        outside = present[(present < 0) | (present >= len(self.defined))]
        inside = present[(present >= 0) & (present < len(self.defined))]
        return sorted(outside.tolist() + inside[~self.defined[inside]].tolist())

    def check(self, values: np.ndarray, path: Path | None = None) -> None:
        """Raise ``BadFile`` naming ``path`` if ``values`` holds a value the label set does
        not define."""
        bad = self.undefined_values(values)
        if bad:
            shown = ", ".join(map(str, bad[:8])) + (" ..." if len(bad) > 8 else "")
            raise BadFile(path or Path("?"), f"label values {shown} are not in the "
                          f"{self.labelset.name} label set")

    def __call__(self, values: np.ndarray, path: Path | None = None) -> np.ndarray:
        self.check(values, path)
        return self.lut[values]


class LabelIds(LabelMapper):
    """A label map kept in its label set's own ids, checked as ``LabelMapper`` checks it; the
    ignore value becomes -1."""

    def __init__(self, labelset):
        self.lut = np.arange(max(labelset.max_id + 1, 256), dtype=np.int64)
        self._define(labelset)
        self.dataset = labelset.name
