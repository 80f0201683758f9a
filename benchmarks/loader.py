"""Loader throughput: images per second through the training pipeline (read, map labels to
concepts, rescale, crop, flip, normalise), per dataset format, with N loader workers.
Prints a table. Generates sample data at the given size when --root is not given.

    python benchmarks/loader.py [--workers 2] [--size 512x1024] [--crop 513] [--batches 10]
"""
import argparse
import tempfile
import time
from pathlib import Path

import torch

from dsspn_cli.data.dataset import JointDataset, SegmentationDataset, collate
from dsspn_cli.data.sample import sample_datasets
from dsspn_cli.data.sampler import DatasetBatchSampler
from dsspn_cli.data.transforms import TrainTransform
from dsspn_cli.hierarchy.tables import MaskingTable
from dsspn_cli.hierarchy.tree import load_tree


def measure(dataset, batch_size, workers, batches, seed=0):
    joint = JointDataset([dataset])
    sampler = DatasetBatchSampler(joint.sizes, batch_size, seed=seed,
                                  batches_per_epoch=batches)
    loader = torch.utils.data.DataLoader(joint, batch_sampler=sampler, num_workers=workers,
                                         collate_fn=collate, persistent_workers=False)
    iterator = iter(loader)
    next(iterator)                       # worker start-up is not throughput
    start = time.perf_counter()
    count = 0
    for batch in iterator:
        count += batch["image"].shape[0]
    return count / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="sample-data folder (default: generate)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", default="512x1024")
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--crop", type=int, default=513)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--batches", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    table = MaskingTable.from_tree(load_tree())
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root
        if root is None:
            from dsspn_cli.data.sample import write_sample_data

            height, width = (int(v) for v in args.size.split("x"))
            root = Path(tmp)
            start = time.perf_counter()
            write_sample_data(root, images=args.images, size=(height, width))
            print(f"sample data {args.size}, {args.images} images per dataset: "
                  f"{time.perf_counter() - start:.1f} s")
        transform = TrainTransform(crop=(args.crop, args.crop))
        print(f"{'format':<12} {'images/s':>9}   (workers {args.workers}, batch "
              f"{args.batch_size}, crop {args.crop})")
        folders = sample_datasets(root)
        folders["coco-json"] = folders["coco"]       # the same data, read from its JSON
        for fmt, folder in folders.items():
            dataset = SegmentationDataset(folder, fmt, "train", table, transform=transform)
            rate = measure(dataset, args.batch_size, args.workers, args.batches)
            print(f"{fmt:<12} {rate:>9.1f}")


if __name__ == "__main__":
    main()
