"""Start-up and hierarchy-command times (median of N runs, fresh processes). Prints a table.

    python benchmarks/startup.py [--runs 5]
"""
import argparse
import statistics
import subprocess
import sys
import tempfile
import time

COMMANDS = [
    ("dsspn --help", ["--help"]),
    ("dsspn hierarchy --help", ["hierarchy", "--help"]),
    ("hierarchy show (shipped tree)", ["hierarchy", "show"]),
    ("hierarchy check (shipped tree)", ["hierarchy", "check"]),
    ("hierarchy tables", ["hierarchy", "tables", "-o", "{tmp}/tables"]),
    ("hierarchy merge coco ade cityscapes mapillary",
     ["hierarchy", "merge", "coco", "ade", "cityscapes", "mapillary", "-o", "{tmp}/t.yaml"]),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"{'command':<48} {'median s':>9} {'min s':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for title, argv in COMMANDS:
            argv = [a.format(tmp=tmp) for a in argv]
            times = []
            for _ in range(args.runs):
                start = time.perf_counter()
                subprocess.run([sys.executable, "-m", "dsspn_cli", *argv], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                times.append(time.perf_counter() - start)
            print(f"{title:<48} {statistics.median(times):>9.3f} {min(times):>7.3f}")


if __name__ == "__main__":
    main()
