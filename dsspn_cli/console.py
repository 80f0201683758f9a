"""The one console every command prints through, and the one progress display.

User text (concept names, file names, messages read from files) is printed literally: never
read as rich markup ('[red]', 'a[/]') or emoji codes (':x:'), never highlighted. Nothing is
wrapped: a long path or message stays one line (a terminal folds it on screen; a copy or a
``grep`` gets it whole). When the output is not a terminal (CI, nohup, ``| tee``, a file),
tables are laid out as wide as they need, so no file name is folded across lines, and
progress is a plain line every few seconds (``DSSPN_PROGRESS_SECONDS``, default 10) with the
step, the rate and the time left, instead of a live bar.
"""

from __future__ import annotations

import os
import time

from rich.console import Console
from rich.table import Table
from rich.text import Text

from dsspn_cli.errors import one_line

WIDE = 10_000                   # the width of a console that is not a terminal: nothing folds
PLAIN = {"markup": False, "emoji": False, "highlight": False}
PROGRESS_SECONDS = "DSSPN_PROGRESS_SECONDS"
_open: set = set()              # progress displays not closed yet (see stop_all)


def console(stderr: bool = False, file=None) -> Console:
    """A console that prints text literally and never wraps it (stderr: for progress and
    notes, keeping stdout for results)."""
    made = Console(stderr=stderr, file=file, soft_wrap=True, **PLAIN)
    if not made.is_terminal:
        made = Console(stderr=stderr, file=file, soft_wrap=True, width=WIDE, **PLAIN)
    return made


def live(out: Console) -> bool:
    """Whether ``out`` is a terminal a live bar can redraw in place."""
    return out.is_terminal and not out.is_dumb_terminal


def table(*columns: str, title: str | None = None) -> Table:
    """A table whose headers and title are literal text; cells go in with ``add_row``.
    Columns fold long values (on a terminal) rather than cut them: nothing is lost."""
    made = Table(title=Text(title) if title else None, title_justify="left")
    for column in columns:
        made.add_column(Text(column), overflow="fold")
    return made


def add_row(made: Table, *cells) -> None:
    """A row of literal text (a cell that is already a ``Text`` keeps its styles), each cell
    on one line: a line break inside a name is shown escaped, so a row stays grep-able."""
    made.add_row(*(cell if isinstance(cell, Text) else Text(printable(str(cell)))
                   for cell in cells))


def printable(text: str) -> str:
    """``text`` on one line, with the bytes of a file name that is not UTF-8 shown as \\xNN
    escapes (Python keeps them as lone surrogates, which no terminal can print)."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:          # a surrogate that is no escaped byte (from JSON)
        raw = text.encode("utf-8", "surrogatepass")
    return one_line(raw.decode("utf-8", "backslashreplace"))


def styled(*parts) -> Text:
    """Text from (text, style) pairs and plain strings, all literal: styles never come from
    the text itself."""
    return Text.assemble(*parts)


def progress_seconds() -> float:
    """Seconds between two progress lines when the output is not a terminal."""
    try:
        return max(0.0, float(os.environ.get(PROGRESS_SECONDS, "10")))
    except ValueError:
        return 10.0


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def _rate(per_second: float, unit: str) -> str:
    digits = 0 if per_second >= 100 else 1 if per_second >= 10 else 2
    return f"{per_second:.{digits}f} {unit}/s"


class Progress:
    """Progress of one piece of work (``done`` of ``total``) on a stderr console.

    On a terminal: a live bar. Elsewhere: a line such as ``training: 120/1500 (8%), loss
    0.91, 2.41 steps/s, ETA 0:09:32`` whenever ``DSSPN_PROGRESS_SECONDS`` have passed since
    the last one, and a last line with the time taken if any line was printed (work that ends
    quickly prints nothing). ``note`` is shown after the count (a loss, a learning rate).
    """

    def __init__(self, what: str, total: int, out: Console | None = None, *, done: int = 0,
                 unit: str = "items", keep: bool = False):
        self.what, self.total, self.unit = what, max(int(total), 0), unit
        self.out = out if out is not None else console(stderr=True)
        self.done = self.first = done
        self.note = ""
        self.started = self.last_line = time.monotonic()
        self.lines = 0
        self.every = progress_seconds()
        self.bar = None
        if live(self.out):
            import rich.progress as bars

            self.bar = bars.Progress(
                bars.TextColumn("{task.description}", markup=False), bars.BarColumn(),
                bars.MofNCompleteColumn(), bars.TextColumn("{task.fields[note]}", markup=False),
                bars.TimeRemainingColumn(), console=self.out, transient=not keep)
            self.bar.start()
            self.task = self.bar.add_task(what, total=self.total, completed=done, note="")
        _open.add(self)

    def update(self, done: int, note: str = "") -> None:
        self.done, self.note = done, note
        if self.bar is not None:
            self.bar.update(self.task, completed=done, note=note)
            return
        now = time.monotonic()
        if now - self.last_line >= self.every:
            self._line(now)

    def advance(self, count: int = 1) -> None:
        self.update(self.done + count, self.note)

    def close(self, finished: bool = True) -> None:
        """End the display; a last line (when lines were printed) only if the work finished."""
        _open.discard(self)
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
        elif self.lines and finished:
            self._line(time.monotonic(), final=True)
        self.lines = 0

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _line(self, now: float, final: bool = False) -> None:
        elapsed = now - self.started
        rate = (self.done - self.first) / elapsed if elapsed > 0 else 0.0
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        parts = [f"{self.what}: {self.done}/{self.total}{share}"]
        if self.note:
            parts.append(self.note)
        parts.append(_rate(rate, self.unit))
        if final:
            parts.append(f"took {_duration(elapsed)}")
        else:
            left = (self.total - self.done) / rate if rate > 0 else None
            parts.append(f"ETA {_duration(left)}" if left is not None else "ETA unknown")
        self.out.print(", ".join(parts))
        self.last_line = now
        self.lines += 1


def stop_all() -> None:
    """Close every display still open (a command ending in an error, whose loops never got
    to close theirs), so that a live bar does not redraw under the error line."""
    for progress in list(_open):
        progress.close(finished=False)


def track(items, total: int, what: str, out: Console | None = None, unit: str = "items"):
    """``items``, showing the progress through them (see ``Progress``)."""
    progress = Progress(what, total, out, unit=unit)
    try:
        for item in items:
            yield item
            progress.advance()
    finally:
        progress.close()


__all__ = ["console", "live", "table", "add_row", "printable", "styled", "Progress", "track",
           "stop_all", "progress_seconds", "WIDE"]
