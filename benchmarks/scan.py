"""The cost of the pre-scan (``engine.faults.scan``): training reads every sample once before
step 1 to find unusable files. Per image (decode the image and the label map, map labels to
concepts, compare sizes) at each dataset's real image size, and what that makes for the whole
dataset (train + val) on this machine and per thread. Prints a table; ``--json FILE`` writes
the figures.

    python benchmarks/scan.py [--threads 2] [--repeat 8] [--json FILE]

Sample data is written at the sizes of the real datasets (Cityscapes 1024x2048, ADE20K about
512x683, COCO about 480x640, Mapillary up to 3000x4000; takes a few minutes), in their real
file formats (PNG for Cityscapes, JPEG photos and PNG label maps elsewhere). Files are read
from the page cache, so the figures are decoding cost: a cold network file system adds its
transfer time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from dsspn_cli.data.dataset import SegmentationDataset
from dsspn_cli.data.sample import FOLDERS, write_sample_data
from dsspn_cli.engine.faults import scan
from dsspn_cli.engine.world import World
from dsspn_cli.hierarchy.tables import MaskingTable
from dsspn_cli.hierarchy.tree import load_tree

# (image size, train + val images of the real dataset)
REAL = {
    "cityscapes": ((1024, 2048), 2975 + 500),
    "ade": ((512, 683), 20210 + 2000),
    "coco": ((480, 640), 118287 + 5000),
    "mapillary": ((3000, 4000), 18000 + 2000),
}


def seconds_per_image(dataset, threads: int, repeat: int) -> float:
    """Wall seconds per sample of a scan with ``threads`` threads (no cache: a new folder)."""
    indices = list(range(len(dataset))) * repeat
    with tempfile.TemporaryDirectory() as run_root:
        start = time.perf_counter()
        bad = scan([(dataset, "val", indices)], Path(run_root), World(), workers=threads)
        elapsed = time.perf_counter() - start
    assert not bad, bad
    return elapsed / len(indices)


def file_megabytes(dataset) -> float:
    sizes = [sum(path.stat().st_size for path in dataset.files(i))
             for i in range(len(dataset))]
    return sum(sizes) / len(sizes) / 2**20


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="scan threads (training uses "
                        "max(2, workers) per process)")
    parser.add_argument("--repeat", type=int, default=8, help="reads of each sample file")
    parser.add_argument("--root", type=Path, help="reuse sample data written here before")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    table = MaskingTable.from_tree(load_tree())
    keep = args.root is not None
    root = args.root or Path(tempfile.mkdtemp(prefix="dsspn-scan-bench-"))
    results = {}
    print(f"{'dataset':<11} {'size':>10} {'MB/image':>9} {'ms/image':>9} "
          f"{'ms/image':>9} {'images':>7} {'whole dataset':>14}")
    print(f"{'':<11} {'':>10} {'':>9} {'1 thread':>9} {f'{args.threads} threads':>9} "
          f"{'':>7} {f'{args.threads} threads':>14}")
    for fmt, ((height, width), count) in REAL.items():
        folder = root / f"{height}x{width}"
        if not (folder / "README.txt").is_file():
            write_sample_data(folder, images=2, size=(height, width))
        dataset = SegmentationDataset(folder / FOLDERS[fmt], fmt, "train", table)
        one = seconds_per_image(dataset, 1, args.repeat)
        many = seconds_per_image(dataset, args.threads, args.repeat)
        results[fmt] = {"size": [height, width], "megabytes_per_image": file_megabytes(dataset),
                        "seconds_per_image_1_thread": one,
                        f"seconds_per_image_{args.threads}_threads": many,
                        "images": count, "dataset_seconds": many * count,
                        "dataset_thread_seconds": one * count}
        print(f"{fmt:<11} {f'{height}x{width}':>10} {file_megabytes(dataset):>9.2f} "
              f"{1000 * one:>9.1f} {1000 * many:>9.1f} {count:>7} "
              f"{many * count / 60:>11.1f} min", flush=True)
    total = sum(r["dataset_seconds"] for r in results.values())
    thread_total = sum(r["dataset_thread_seconds"] for r in results.values())
    print(f"all four: {total / 60:.1f} min with {args.threads} threads on this machine; "
          f"{thread_total / 3600:.2f} thread-hours (divide by ranks x threads per rank)")
    if not keep:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        doc = {"machine": f"{platform.processor() or platform.machine()}, "
                          f"{os.cpu_count()} cores", "torch": torch.__version__,
               "threads": args.threads, "datasets": results,
               "all_four_seconds": total, "all_four_thread_seconds": thread_total}
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
