"""Label maps in a dataset's ids -> concept maps in the tree's ids, through the masking table.

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
        self.defined = np.zeros(size, dtype=bool)
        for label in labelset.labels:
            if label.id >= 0:
                self.defined[label.id] = True
        if labelset.ignore_index >= 0:
            self.defined[labelset.ignore_index] = True
            self.lut[labelset.ignore_index] = IGNORE
        self.dataset = dataset
        self.labelset = labelset

    def undefined_values(self, values: np.ndarray) -> list[int]:
        present = np.unique(values)
        outside = present[(present < 0) | (present >= len(self.defined))]
        inside = present[(present >= 0) & (present < len(self.defined))]
        return sorted(outside.tolist() + inside[~self.defined[inside]].tolist())

    def __call__(self, values: np.ndarray, path: Path | None = None) -> np.ndarray:
        bad = self.undefined_values(values)
        if bad:
            shown = ", ".join(map(str, bad[:8])) + (" ..." if len(bad) > 8 else "")
            raise BadFile(path or Path("?"), f"label values {shown} are not in the "
                          f"{self.labelset.name} label set")
        return self.lut[values]
