"""PyTorch datasets over the format readers: image, concept map (tree ids) and dataset name.

``SegmentationDataset`` reads one dataset split; ``JointDataset`` chains several for joint
training with ``DatasetBatchSampler``. Items may be asked for as ``(index, seed)``: the seed
drives that sample's augmentation, so results do not depend on loader workers.
"""

from __future__ import annotations

from pathlib import Path

import torch

from dsspn_cli.data.common import BadFile, read_image, size_mismatch
from dsspn_cli.data.formats import check_root, get_format, labelset_for
from dsspn_cli.data.loading import item_failure
from dsspn_cli.data.targets import LabelIds, LabelMapper
from dsspn_cli.data.transforms import EvalTransform
from dsspn_cli.errors import UserError


class SegmentationDataset(torch.utils.data.Dataset):
    """One split of a dataset on disk. ``table``: the masking table its labels map through
    to concepts; None keeps them in the label set's own ids (``LabelIds``). ``labelset``:
    the label set its label maps are read in (default: the format's, or a ``folder``'s
    own file)."""

    def __init__(self, root, format_name: str, split: str, table, dataset: str | None = None,
                 transform=None, seed: int = 0, labelset=None):
        self.root = check_root(Path(root))
        self.format = get_format(format_name)
        self.labelset = labelset or labelset_for(self.format, self.root)
        self.name = dataset or self.labelset.name
        self.mapper = (LabelMapper(table, self.name, self.labelset) if table is not None
                       else LabelIds(self.labelset))
        self.transform = transform or EvalTransform()
        self.seed = seed
        samples = self.format.samples(self.root, split)
        unpaired = [s for s in samples if s.label is None or s.extra.get("missing")]
        if unpaired:
            names = ", ".join(str(s.image if s.label is None else s.label)
                              for s in unpaired[:3])
            raise UserError(f"{self.root}: {len(unpaired)} images or label maps of split "
                            f"'{split}' have no partner (first: {names}); run 'dsspn data "
                            f"check {self.root} --format {self.format.name}' for the list")
        if not samples:
            raise UserError(f"{self.root}: no images in split '{split}' of the "
                            f"{self.format.name} layout ({self.format.layout})")
        self.samples = samples
        self.split = split

    def __len__(self) -> int:
        return len(self.samples)

    def files(self, index: int) -> list[Path]:
        """The files a sample reads (its image, and its label map when it has its own)."""
        sample = self.samples[index]
        return [sample.image] + ([sample.label] if sample.label is not None else [])

    def problem(self, index: int) -> str | None:
        """Why a sample cannot be used (unreadable, values outside the label set, sizes that
        differ), or None: the same reading training does, so a sample that passes trains."""
        try:
            self.load(index)
        except BadFile as exc:
            return str(exc)
        return None

    def drop(self, indices) -> None:
        """Leave these samples out (``--skip-bad``)."""
        gone = set(indices)
        self.samples = [s for i, s in enumerate(self.samples) if i not in gone]

    def load(self, index: int):
        """The raw image (HxWx3 uint8) and concept map (HxW int64, -1 ignore) of a sample."""
        sample = self.samples[index]
        image = read_image(sample.image)
        concepts = self.mapper(self.format.read_label(sample), sample.label)
        if concepts.shape != image.shape[:2]:
            raise BadFile(sample.label, size_mismatch(sample.label, concepts.shape, sample.image,
                                                      image.shape))
        return image, concepts

    def __getitem__(self, item):
        index, seed = item if isinstance(item, tuple) else (item, self.seed * 1_000_003 + item)
        image, concepts = self.load(index)
        generator = torch.Generator().manual_seed(int(seed))
        image_t, target_t = self.transform(image, concepts, generator)
        return {"image": image_t, "target": target_t, "dataset": self.name, "index": index}


class JointDataset(torch.utils.data.Dataset):
    """Several datasets end to end; global index = dataset offset + local index."""

    def __init__(self, datasets: list[SegmentationDataset]):
        names = [d.name for d in datasets]
        if len(set(names)) != len(names):
            raise UserError(f"dataset given twice among {', '.join(names)}")
        self.datasets = datasets
        self.offsets = []
        total = 0
        for dataset in datasets:
            self.offsets.append(total)
            total += len(dataset)
        self.total = total

    @property
    def sizes(self) -> list[int]:
        return [len(d) for d in self.datasets]

    def __len__(self) -> int:
        return self.total

    def locate(self, index: int) -> tuple[int, int]:
        for d in reversed(range(len(self.offsets))):
            if index >= self.offsets[d]:
                return d, index - self.offsets[d]
        raise IndexError(index)

    def __getitem__(self, item):
        index, seed = item if isinstance(item, tuple) else (item, None)
        d, local = self.locate(index)
        try:
            return self.datasets[d][(local, seed) if seed is not None else local]
        except Exception as exc:
            # Passed on as data, not raised: an exception raised in a loader worker reaches
            # the main process as a traceback, and training wants to name the file instead.
            return item_failure(exc, self.datasets[d].files(local))


def collate(items: list[dict]) -> dict:
    """Stack a batch from one dataset (the sampler guarantees one dataset per batch); a batch
    with an unusable file is ``{"bad": [messages]}``, one with another error (a UserError)
    ``{"error": [messages]}`` (``loading.item_failure``)."""
    for key in ("error", "bad"):
        failed = [item[key] for item in items if key in item]
        if failed:
            return {key: failed}
    names = {item["dataset"] for item in items}
    if len(names) != 1:
        raise ValueError(f"a batch mixes datasets {sorted(names)}; use DatasetBatchSampler")
    return {"image": torch.stack([i["image"] for i in items]),
            "target": torch.stack([i["target"] for i in items]),
            "dataset": names.pop(),
            "index": torch.tensor([i["index"] for i in items])}
