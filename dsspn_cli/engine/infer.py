"""The one inference path that ``dsspn evaluate``, ``dsspn predict`` and validation during
training share, so that an image gets the same labels in all three.

- Images are decoded in DataLoader worker processes (``image_loader``), one image at a time
  (their sizes differ), in order; a file that cannot be read arrives as ``{"bad": message}``
  (a UserError as ``{"error": message}``) so that the command names it instead of printing
  a worker's traceback. Read them with ``data.loading.reading``, which shuts the workers
  down when the loop ends.
- ``Inference`` normalises an image on the model's device and runs the model on it whole, or,
  when a side exceeds ``tile``, in tiles of at most ``tile`` x ``tile`` pixels that overlap by
  ``tile // 4``; each tile keeps only its central part (up to the middle of each overlap), so
  every output pixel comes from the tile where it has the most context. The default tile,
  2048, runs Cityscapes' 1024x2048 frames, ADE20K and COCO whole (the benchmarks' protocol)
  and tiles Mapillary's photos of up to 12 MP, whose whole-image activations would not fit a
  smaller GPU.
- ``precision``: fp32 (the default for evaluation and prediction: the reference figures),
  bf16, fp16 or auto, as autocast (``world.resolve_precision``).
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from dsspn_cli.data.common import read_image
from dsspn_cli.data.loading import item_failure
from dsspn_cli.data.transforms import normalise
from dsspn_cli.engine.config import MIN_TILE, TILE

Track = Callable[[Iterable, int, str], Iterable]


def no_track(items, total, what):
    return items


# ------------------------------------------------------------------------------ decoding


def _tensor(array: np.ndarray) -> torch.Tensor:
    # Pillow's arrays can be read-only; torch wants to own writable memory.
    return torch.from_numpy(np.array(array) if not array.flags.writeable
                            else np.ascontiguousarray(array))


class LabelledImages(torch.utils.data.Dataset):
    """A SegmentationDataset's samples as decoded: the image (H x W x 3 uint8) and its
    concept map (H x W int64, -1 ignore), untransformed."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        try:
            image, concepts = self.dataset.load(index)
            return {"index": index, "image": _tensor(image), "target": _tensor(concepts)}
        except Exception as exc:
            return {"index": index, **item_failure(exc, self.dataset.files(index))}


class ImageFiles(torch.utils.data.Dataset):
    """Image files, decoded to H x W x 3 uint8."""

    def __init__(self, paths: Sequence):
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        try:
            return {"index": index, "image": _tensor(read_image(self.paths[index]))}
        except Exception as exc:
            return {"index": index, **item_failure(exc, [self.paths[index]])}


def image_loader(items: torch.utils.data.Dataset, indices: Sequence[int], workers: int,
                 device: torch.device) -> torch.utils.data.DataLoader:
    """``items[i]`` for each of ``indices`` in order, decoded by ``workers`` processes (0: in
    this one; never more than there are items), one item at a time."""
    from dsspn_cli.engine.faults import ignore_stop_signals

    indices = list(indices)
    workers = min(workers, len(indices))
    return torch.utils.data.DataLoader(
        items, batch_size=None, sampler=indices, num_workers=workers,
        pin_memory=device.type == "cuda",
        worker_init_fn=ignore_stop_signals if workers > 0 else None)


# ------------------------------------------------------------------------------ tiling


def tile_spans(length: int, tile: int) -> list[tuple[int, int, int, int]]:
    """Along one axis: (start, end, keep_start, keep_end) per tile, absolute pixels. Tiles are
    at most ``tile`` long and overlap by at least ``tile // 4``; the kept parts split each
    overlap in the middle and together cover [0, length) once."""
    if length <= tile:
        return [(0, length, 0, length)]
    step = tile - tile // 4
    starts = list(range(0, length - tile, step)) + [length - tile]
    spans = []
    for i, start in enumerate(starts):
        end = start + tile
        keep_start = 0 if i == 0 else (start + starts[i - 1] + tile) // 2
        keep_end = length if i == len(starts) - 1 else (starts[i + 1] + end) // 2
        spans.append((start, end, keep_start, keep_end))
    return spans


def normalised(image: torch.Tensor) -> torch.Tensor:
    """H x W x 3 uint8 -> 1 x 3 x H x W float, normalised as in training, on its device."""
    return normalise(image.permute(2, 0, 1).float().div_(255))[None]


class Inference:
    """A model (a Segmenter, or anything with its ``predict``) run over whole images: in
    tiles when larger than ``tile``, under ``precision``; for ``dataset``'s concepts (None:
    the tree's) down to depth ``level`` (None: as deep as they go). ``classes``: the
    concept ids of each class of a vocabulary (a class may be several: a union; a concept
    id alone is a class of one); the map then holds each pixel's class index, -1 for
    none of them. ``hedge``: each pixel stops at the deepest concept of its path whose
    confidence exceeds it (``model.hedging``). ``levels``: the model's ``levels`` instead,
    each pixel's concept and confidence at every depth of the tree (L x H x W each), from
    which a hedged answer at any threshold can be read."""

    def __init__(self, model, dataset: str | None = None, level: int | None = None,
                 tile: int = TILE, precision: str = "fp32", device=None,
                 classes: tuple[frozenset[int] | int, ...] | None = None,
                 hedge: float | None = None, levels: bool = False):
        from dsspn_cli.engine.world import resolve_precision

        self.model = getattr(model, "module", model)        # DistributedDataParallel's core
        self.dataset, self.level, self.tile, self.classes = dataset, level, tile, classes
        self.hedge, self.levels = hedge, levels
        self.device = torch.device(device) if device is not None else \
            next(self.model.parameters()).device
        self.dtype = resolve_precision(precision, self.device)

    def _predict(self, tensor: torch.Tensor):
        from dsspn_cli.model.contract import Query

        query = Query(self.dataset, self.level, self.classes, hedge=self.hedge)
        run = self.model.levels if self.levels else self.model.predict
        with torch.autocast(self.device.type, dtype=self.dtype or torch.float32,
                            enabled=self.dtype is not None):
            concepts, confidence = run(tensor, query)
        return concepts[0], confidence[0].float()

    @torch.no_grad()
    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Concept map (H x W int64) and confidence (H x W float32), on the device, of an
        H x W x 3 uint8 image (with ``levels``: L x H x W each)."""
        tensor = normalised(image.to(self.device, non_blocking=True))
        height, width = tensor.shape[-2:]
        rows, cols = tile_spans(height, self.tile), tile_spans(width, self.tile)
        if len(rows) == 1 and len(cols) == 1:
            return self._predict(tensor)
        concepts = confidence = None
        for y0, y1, ky0, ky1 in rows:
            for x0, x1, kx0, kx1 in cols:
                part, score = self._predict(tensor[..., y0:y1, x0:x1])
                if concepts is None:        # the first tile tells the leading shape
                    concepts = part.new_empty((*part.shape[:-2], height, width))
                    confidence = score.new_empty((*score.shape[:-2], height, width))
                keep = (..., slice(ky0 - y0, ky1 - y0), slice(kx0 - x0, kx1 - x0))
                concepts[..., ky0:ky1, kx0:kx1] = part[keep]
                confidence[..., ky0:ky1, kx0:kx1] = score[keep]
        return concepts, confidence


def predict_array(model, image: np.ndarray, dataset: str | None = None,
                  level: int | None = None, tile: int = TILE, device=None,
                  precision: str = "fp32") -> tuple[np.ndarray, np.ndarray]:
    """Concept map (H x W int64) and confidence (H x W float32) of an RGB uint8 array."""
    concepts, confidence = Inference(model, dataset, level, tile, precision,
                                     device)(_tensor(image))
    return concepts.cpu().numpy(), confidence.cpu().numpy()


__all__ = ["Inference", "LabelledImages", "ImageFiles", "image_loader", "tile_spans",
           "normalised", "predict_array", "TILE", "MIN_TILE", "Track", "no_track"]
