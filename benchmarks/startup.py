"""Start-up and hierarchy-command times (median of N runs, fresh processes), beside a bare
two-command Typer app's --help measured in the same run, turn by turn. Prints a table.

    python benchmarks/startup.py [--runs 5]

The goal: 'dsspn --help', the hierarchy commands' --help and tab completion within 1.5x the
bare app (neither torch nor pydantic imported for them).
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

BARE_APP = '''
import typer

app = typer.Typer()


@app.command()
def first(name: str = "x"):
    """The first command."""


@app.command()
def second(count: int = 1):
    """The second command."""


app()
'''

COMPLETE = {"_DSSPN_COMPLETE": "complete_bash", "COMP_WORDS": "dsspn hierarchy ",
            "COMP_CWORD": "2"}

# (title, argv after 'python', extra environment, compared with the bare app)
COMMANDS = [
    ("bare Typer app --help (two commands)", ["{tmp}/bare.py", "--help"], {}, False),
    ("dsspn --help", ["-m", "dsspn_cli", "--help"], {}, True),
    ("dsspn hierarchy --help", ["-m", "dsspn_cli", "hierarchy", "--help"], {}, True),
    ("tab completion (dsspn hierarchy <TAB>)", ["-m", "dsspn_cli"], COMPLETE, True),
    ("dsspn train --help", ["-m", "dsspn_cli", "train", "--help"], {}, False),
    ("hierarchy show (shipped tree)", ["-m", "dsspn_cli", "hierarchy", "show"], {}, False),
    ("hierarchy check (shipped tree)", ["-m", "dsspn_cli", "hierarchy", "check"], {}, False),
    ("hierarchy tables", ["-m", "dsspn_cli", "hierarchy", "tables", "-o", "{tmp}/tables"], {},
     False),
    ("hierarchy merge coco ade cityscapes mapillary",
     ["-m", "dsspn_cli", "hierarchy", "merge", "coco", "ade", "cityscapes", "mapillary", "-o",
      "{tmp}/t.yaml"], {}, False),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    times = {title: [] for title, *_ in COMMANDS}
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "bare.py"), "w") as handle:
            handle.write(BARE_APP)
        # Turn by turn, so that a busy moment of the machine falls on every command alike.
        for _ in range(args.runs):
            for title, argv, extra, _ in COMMANDS:
                argv = [a.format(tmp=tmp) for a in argv]
                start = time.perf_counter()
                subprocess.run([sys.executable, *argv], check=True, env={**os.environ, **extra},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                times[title].append(time.perf_counter() - start)
    bare = statistics.median(times[COMMANDS[0][0]])
    print(f"{'command':<48} {'median s':>9} {'min s':>7} {'x bare':>7}")
    for title, _, _, compared in COMMANDS:
        median = statistics.median(times[title])
        ratio = f"{median / bare:>7.2f}" if compared or title == COMMANDS[0][0] else f"{'':>7}"
        print(f"{title:<48} {median:>9.3f} {min(times[title]):>7.3f} {ratio}")


if __name__ == "__main__":
    main()
