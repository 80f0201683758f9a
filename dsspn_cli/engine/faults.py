"""What training does when something goes wrong: a signal, an unusable file, a lost process.

- SIGINT or SIGTERM asks the run to stop after the step in progress: every rank agrees on the
  step, rank 0 writes a checkpoint, and the command exits with 128 + the signal's number (130,
  143) and a line that says how to resume. A second signal stops at once, with the same exit
  code and a line.
- Before the first step every sample the run will read is read once (in threads, split over
  the ranks), the way training reads it. Unusable ones stop the run with the full list, or
  are left out with ``--skip-bad``. The result is kept in the run folder and reused while the
  files are unchanged, so a resume does not read a large dataset again. A signal stops this
  reading within a second (there is no step to finish yet), and the run with it.
- A rank that dies breaks the others' collectives: they stop with a message instead of a
  traceback, and torchrun stops the job (or, with ``--max-restarts``, starts it again, and
  the new processes resume from the last checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
from pathlib import Path

from dsspn_cli.errors import Stopped, UserError

SCAN_FILE = "data-scan.json"
BAD_FILES = "bad-files.txt"


class Interrupted(UserError):
    """The run stopped on a signal, after writing its checkpoint."""

    prefix = "stopped"

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class StopRequest:
    """SIGINT / SIGTERM handlers for the span of a run: the first signal sets ``signum`` (the
    loop stops after its step), a second one stops at once (``Stopped``: exit 128 + its
    number, one line saying how to go on from the last checkpoint of ``run``)."""

    def __init__(self, run=None):
        self.signum = 0
        self.run = run
        self._previous: dict = {}

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    def _handle(self, signum, frame) -> None:
        if self.signum:
            resume = (f"; continue from the last checkpoint with 'dsspn train --out {self.run} "
                      "--resume'" if self.run is not None else "")
            raise Stopped(signum, f"{signal.Signals(signum).name} again: stopped at once, "
                          f"without finishing the step in progress{resume}")
        self.signum = signum

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():   # Python's rule
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def ignore_stop_signals(worker_id: int) -> None:
    """Loader workers leave signals to the main process: a Ctrl-C reaches the whole process
    group (a scheduler's SIGTERM may reach every process of the job), and a worker that died
    of it would end the run before its checkpoint. Workers still exit when the main process
    goes (PyTorch's watchdog). Deaf to SIGTERM, they outlive multiprocessing's exit handler,
    which joins them for ever: every loader is shut down explicitly (``data.loading``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def restart_count() -> int:
    """How often torchrun has restarted this job (``--max-restarts``); 0 outside torchrun."""
    try:
        return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    except ValueError:
        return 0


def lost_peer(exc: BaseException) -> bool:
    """Whether an error comes from a collective whose peer is gone (died, killed, hung)."""
    import torch.distributed as dist

    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc).lower()
    return any(sign in text for sign in ("connection closed by peer", "connection reset",
                                         "broken pipe", "gloo", "nccl", "timed out",
                                         "socket", "connection refused"))


# ------------------------------------------------------------------------ unusable files


def _fingerprint(dataset, indices) -> str:
    digest = hashlib.sha1()
    for index in indices:
        for path in dataset.files(index):
            try:
                stat = path.stat()
                digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            except OSError:
                digest.update(f"{path}\0missing\n".encode())
    return digest.hexdigest()


def _read_scan_cache(path: Path) -> dict:
    """data-scan.json's entries {'dataset/split': {'fingerprint': str, 'bad': [[index,
    message], ...]}}; an entry of another shape (an edited or foreign file) is left out, so
    that its part is scanned again."""
    try:
        cache = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):   # none yet, cut short by a kill: scan again
        return {}
    if not isinstance(cache, dict):
        return {}

    def usable(entry) -> bool:
        if not (isinstance(entry, dict) and isinstance(entry.get("fingerprint"), str)
                and isinstance(entry.get("bad"), list)):
            return False
        return all(isinstance(item, list) and len(item) == 2 and type(item[0]) is int
                   and item[0] >= 0 and isinstance(item[1], str) for item in entry["bad"])

    return {key: entry for key, entry in cache.items() if usable(entry)}


def scan(parts, run_root: Path, world, console=None, workers: int = 4,
         stop: StopRequest | None = None) -> list[tuple]:
    """Read every sample of ``parts`` [(dataset, split, indices)] once; the unusable ones as
    [(part number, index, message)], the same on every rank. A signal to ``stop`` ends the
    reading at once and raises Interrupted (on every rank), with nothing written."""
    import torch.distributed as dist

    from dsspn_cli.data.loading import in_order, thread_pool

    cache_file = run_root / SCAN_FILE
    keys = [f"{d.name}/{split}" for d, split, _ in parts]
    prints = [_fingerprint(d, indices) for d, _, indices in parts]
    cached = None
    if world.main:
        cache = _read_scan_cache(cache_file)
        if all(cache.get(k, {}).get("fingerprint") == f for k, f in zip(keys, prints)):
            cached = [(p, int(i), str(m)) for p, k in enumerate(keys)
                      for i, m in cache[k]["bad"]]
    if world.size > 1:                  # rank 0 decides, so that every rank does the same
        box = [cached]
        dist.broadcast_object_list(box, src=0)
        cached = box[0]
    if cached is not None:
        return cached
    jobs = [(p, i) for p, (_, _, indices) in enumerate(parts) for i in indices]
    mine = jobs[world.rank::world.size]

    def check(job):
        p, i = job
        return p, i, parts[p][0].problem(i)

    def stopping() -> bool:
        return stop is not None and bool(stop.signum)

    with thread_pool(workers) as pool:
        results = in_order(pool, check, mine, stopping)
        if console is not None and world.main:
            from dsspn_cli.console import track

            results = track(results, len(mine), "reading the data once", console, "samples")
        found = [(p, i, m) for p, i, m in results if m is not None]
    signum = stop.signum if stopping() else 0
    if world.size > 1:                  # a rank that was signalled stops them all
        gathered = [None] * world.size
        dist.all_gather_object(gathered, (found, signum))
        found = sorted(item for part, _ in gathered for item in part)
        signum = max(s for _, s in gathered)
    if signum:
        raise Interrupted(f"{signal.Signals(signum).name} while reading the data before step "
                          "1: nothing trained, no checkpoint written; run the same command "
                          "again to start", signum)
    if world.main:
        from dsspn_cli.files import atomic_write_text

        cache = {k: {"fingerprint": f, "bad": [[i, m] for p, i, m in found if p == n]}
                 for n, (k, f) in enumerate(zip(keys, prints))}
        atomic_write_text(cache_file, json.dumps(cache, indent=1) + "\n")
    return found


def handle_bad_samples(parts, bad: list[tuple], run_root: Path, world, console,
                       skip_bad: bool) -> None:
    """Report unusable samples; leave them out with ``skip_bad``, else stop with the list."""
    if not bad:
        return
    from dsspn_cli.files import atomic_write_text

    listing = run_root / BAD_FILES
    lines = [message for _, _, message in bad]
    if world.main:
        atomic_write_text(listing, "\n".join(lines) + "\n")
    total = sum(len(indices) for _, _, indices in parts)
    first = "; ".join(message.split(": ", 1)[0] for message in lines[:3])
    if not skip_bad:
        if world.main and console is not None:
            for line in lines:
                console.print(line, markup=False, highlight=False, soft_wrap=True)
        raise UserError(f"{len(bad)} of {total} samples cannot be used (first: {first}); all "
                        f"are listed above and in {listing}; fix or remove them, or pass "
                        "--skip-bad to train without them")
    if world.main and console is not None:
        console.print(f"--skip-bad: leaving out {len(bad)} of {total} samples that cannot be "
                      f"used (first: {first}); the list is in {listing}",
                      markup=False, highlight=False)
    for p, (dataset, _, _) in enumerate(parts):
        dataset.drop([i for q, i, _ in bad if q == p])
