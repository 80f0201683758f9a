"""Reading in loader worker processes and in threads, with work that ends when it ends.

- ``reading(loader)``: a DataLoader's iterator whose worker processes are shut down when the
  block ends, however it ends (done, an error, a signal). Left to the garbage collector they
  may outlive the command: loader workers ignore SIGINT and SIGTERM (``faults.
  ignore_stop_signals``), so multiprocessing's exit handler, which ends them with SIGTERM and
  then joins them, would wait for ever. ``open_iterator`` and ``shut_down`` are the two
  halves, for a loop that spans several iterators (training's epochs). Workers still running
  when Python exits (an iterator nobody shut down) are shut down, or killed, before that
  handler runs.
- A loader worker never raises: ``item_failure`` turns what went wrong with an item into data
  naming its files, and the main process says it in one line. Errors raised in a worker all
  the same (outside the item: collating, starting, a worker killed) are one line too
  (``worker_errors``), not the worker's traceback.
- ``thread_pool``: threads that read files, whose pending work is dropped, not waited for,
  when the block ends early; ``in_order`` yields their results in order and stops within a
  tenth of a second of a request (a Ctrl-C), not after the whole dataset.
"""

from __future__ import annotations

import atexit
import weakref
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager

from dsspn_cli.errors import UserError, one_line

# Iterators with worker processes that have not been shut down yet, for the exit handler.
_open: weakref.WeakSet = weakref.WeakSet()


def open_iterator(loader):
    """``iter(loader)``; its workers, if it has any, are shut down at exit at the latest."""
    iterator = iter(loader)
    if getattr(iterator, "_workers", None):
        _open.add(iterator)
        # atexit runs the last registered first: registering again now puts this handler
        # before torch's (which makes shutting down a no-op) and multiprocessing's (the join
        # that would wait for ever), whatever was imported since.
        atexit.unregister(_shut_down_all)
        atexit.register(_shut_down_all)
    return iterator


def shut_down(iterator, loader=None) -> None:
    """End ``iterator``'s worker processes now (nothing for one without workers). A loader
    with ``persistent_workers`` forgets it, so that its next iterator starts new workers."""
    if loader is not None and getattr(loader, "_iterator", None) is iterator:
        loader._iterator = None
    if iterator is None or not hasattr(iterator, "_shutdown_workers"):
        return
    _open.discard(iterator)
    iterator._shutdown_workers()       # ask them to stop, join them (5 s each at most)
    for worker in getattr(iterator, "_workers", ()):
        if worker.is_alive():          # stuck, and deaf to the SIGTERM torch sends then
            worker.kill()
            worker.join(timeout=1)


def _shut_down_all() -> None:
    for iterator in list(_open):
        shut_down(iterator)


def _original_error(text: str) -> tuple[str, str]:
    """The type and message of the error in a worker's traceback as torch passes it on
    ('Caught X in DataLoader worker process 0.\\nOriginal Traceback ...\\nmodule.X: ...')."""
    lines = [line for line in text.splitlines() if line.strip()]
    last = lines[-1] if lines else text
    name, colon, message = last.partition(": ")
    if colon and name and " " not in name:
        return name.rsplit(".", 1)[-1], message
    return "", last


def worker_failure(exc: BaseException) -> UserError | None:
    """The one line for an error torch raised on a loader worker's behalf; None for others."""
    text = str(exc)
    first = text.split("\n", 1)[0]
    if "in DataLoader worker process" in first and "Original Traceback" in text:
        name, message = _original_error(text)
        if isinstance(exc, UserError) or name == "BadFile":   # said for the user already
            return UserError(one_line(message))
        original = f"{name}: {message}" if name else message
        return UserError(one_line(f"reading the data failed in a loader process "
                                  f"({original[:200]}); run with --workers 0 to see where"))
    if first.startswith("DataLoader worker (pid"):
        return UserError(one_line(f"a loader process ended unexpectedly ({first[:160]}); the "
                                  "machine may be out of memory: try fewer --workers"))
    return None


@contextmanager
def worker_errors():
    """Errors raised on a loader worker's behalf, as one line (``worker_failure``)."""
    try:
        yield
    except Exception as exc:
        told = worker_failure(exc)
        if told is None:
            raise
        raise told from None


@contextmanager
def reading(loader):
    """``with reading(loader) as items: for item in items: ...``: the loader's iterator,
    its workers shut down when the block ends, their errors told in one line."""
    iterator = open_iterator(loader)
    try:
        with worker_errors():
            yield iterator
    finally:
        shut_down(iterator, loader)


def item_failure(exc: Exception, files) -> dict:
    """What a dataset returns, in a worker or not, instead of an item it could not make:
    ``{"bad": message}`` for a file that cannot be used (``BadFile``, or anything
    unforeseen, named by the item's files), ``{"error": message}`` for a UserError, which
    is about a setting or a shared file rather than this item. Raised in a worker, either
    would reach the user as the worker's whole traceback."""
    from dsspn_cli.data.common import BadFile

    if isinstance(exc, BadFile):
        return {"bad": str(exc)}
    if isinstance(exc, UserError):
        return {"error": str(exc)}
    detail = one_line(str(exc))[:160]
    names = ", ".join(str(path) for path in files)
    return {"bad": f"{names}: reading failed ({type(exc).__name__}{': ' if detail else ''}"
                   f"{detail})"}


# ------------------------------------------------------------------------------ threads


@contextmanager
def thread_pool(workers: int):
    """A ThreadPoolExecutor whose pending work is cancelled when the block ends: an error
    or a Ctrl-C ends the command now, not after every file queued has been read (threads
    cannot be stopped: each finishes the one file it is reading)."""
    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        yield pool
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def in_order(pool, function, items, stop=None):
    """``function(item)`` for each of ``items``, run in ``pool``, yielded in order; ends
    early, within a tenth of a second, once ``stop()`` is true."""
    futures = [pool.submit(function, item) for item in items]
    for future in futures:
        while not future.done():
            if stop is not None and stop():
                return
            wait([future], timeout=0.1)
        if stop is not None and stop():
            return
        yield future.result()


__all__ = ["open_iterator", "shut_down", "reading", "worker_errors", "worker_failure",
           "item_failure", "thread_pool", "in_order"]
