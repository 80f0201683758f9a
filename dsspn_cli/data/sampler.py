"""Batches for joint training: every batch comes from one dataset (its images share a label
set, so one concept mask serves the batch), datasets drawn with per-dataset weights, and the
batches of an epoch split across DistributedDataParallel ranks.

Each index is yielded with its own augmentation seed, so what a sample looks like depends on
(seed, epoch, position) only, not on loader workers. Pure Python and numpy: no torch needed.
"""

from __future__ import annotations

import numpy as np

from dsspn_cli.errors import UserError


class DatasetBatchSampler:
    """Yields batches as lists of (global index, seed); global index = offset of the dataset +
    index within it, in the order of ``sizes``. ``batch_size``: one for every dataset, or one
    per dataset (the paper's 4 for COCO-Stuff and ADE20K, 6 for Cityscapes and Mapillary);
    each process gets whole batches."""

    def __init__(self, sizes: list[int], batch_size: int | list[int],
                 weights: list[float] | None = None, seed: int = 0, rank: int = 0,
                 world_size: int = 1, batches_per_epoch: int | None = None,
                 names: list[str] | None = None):
        names = names or [f"dataset {i}" for i in range(len(sizes))]
        batch_sizes = ([batch_size] * len(sizes) if isinstance(batch_size, int)
                       else list(batch_size))
        if len(batch_sizes) != len(sizes) or min(batch_sizes, default=1) < 1:
            raise UserError(f"--batch-size {batch_size}: give 1 or more, one for every "
                            "dataset or one per dataset")
        self.weighted = weights is not None
        weights = list(weights) if weights is not None else [float(s) for s in sizes]
        if len(weights) != len(sizes) or not all(np.isfinite(w) and w >= 0 for w in weights) \
                or sum(weights) <= 0:
            raise UserError("dataset weights must be one non-negative number per dataset, "
                            "not all zero")
        for name, size, weight, batch in zip(names, sizes, weights, batch_sizes):
            if weight > 0 and size < batch:
                raise UserError(f"{name} has {size} training images, fewer than the batch size "
                                f"{batch}; lower --batch-size")
        if not 0 <= rank < world_size:
            raise UserError(f"rank {rank} is outside the world size {world_size}")
        self.sizes, self.batch_sizes, self.seed = list(sizes), batch_sizes, seed
        self.probabilities = np.asarray(weights, dtype=float) / sum(weights)
        self.rank, self.world_size = rank, world_size
        self.offsets = np.cumsum([0] + self.sizes[:-1]).tolist()
        total = batches_per_epoch or sum(size // b for size, b in zip(sizes, batch_sizes))
        self.per_rank = max(1, total // world_size)
        self.epoch = 0
        self.skip = 0          # batches of this epoch already done (resuming mid-epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_rank

    def global_batches(self, epoch: int) -> list[tuple[int, np.ndarray]]:
        """All ranks' batches of an epoch, the same on every rank: (dataset, local indices).

        Without weights an epoch is every full batch of every dataset once, in random order;
        with weights each batch's dataset is drawn by weight (a dataset's images are gone
        through in a shuffled order and reshuffled when used up)."""
        rng = np.random.default_rng([self.seed, epoch])

        def shuffled_batches(d):
            order = rng.permutation(self.sizes[d])
            batch = self.batch_sizes[d]
            return [order[i:i + batch] for i in range(0, self.sizes[d] - batch + 1, batch)]

        wanted = self.per_rank * self.world_size
        batches: list[tuple[int, np.ndarray]] = []
        if not self.weighted:
            while len(batches) < wanted:
                round_ = [(d, b) for d in range(len(self.sizes)) for b in shuffled_batches(d)]
                batches += [round_[i] for i in rng.permutation(len(round_))]
            return batches[:wanted]
        queues: list[list[np.ndarray]] = [[] for _ in self.sizes]
        for _ in range(wanted):
            d = int(rng.choice(len(self.sizes), p=self.probabilities))
            if not queues[d]:
                queues[d] = shuffled_batches(d)
            batches.append((d, queues[d].pop(0)))
        return batches

    def __iter__(self):
        batches = self.global_batches(self.epoch)
        rng = np.random.default_rng([self.seed, self.epoch, 1])
        seeds = rng.integers(0, 2**31 - 1, size=(len(batches), max(self.batch_sizes)))
        for position in range(self.rank + self.skip * self.world_size, len(batches),
                              self.world_size):
            d, local = batches[position]
            yield [(self.offsets[d] + int(i), int(s)) for i, s in zip(local, seeds[position])]
