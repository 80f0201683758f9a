"""The ``dsspn`` command. Sub-commands live in their own modules and import heavy libraries
(networkx, NLTK, torch) only inside the commands, so ``dsspn --help`` answers at once."""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import signal
import sys
import threading
import warnings

import click
import typer
from typer.core import TyperCommand, TyperGroup
from typer.exceptions import TyperException

from dsspn_cli import __version__
from dsspn_cli.cli.data import app as data_app
from dsspn_cli.cli.hierarchy import app as hierarchy_app
from dsspn_cli.errors import Stopped, UserError, one_line, os_error

# The model commands, imported only when one of them runs or shows its own help: their
# options come from the training config's schema (pydantic) and their modules reach torch,
# which 'dsspn --help', the hierarchy commands and tab completion must not pay for.
# name -> (module, the command's attribute there, the function whose docstring is its help)
LAZY = {
    "train": ("dsspn_cli.cli.train", "train_command", "_train"),
    "evaluate": ("dsspn_cli.cli.evaluate", "evaluate_command", "evaluate_command"),
    "predict": ("dsspn_cli.cli.predict", "predict_command", "predict_command"),
    "export": ("dsspn_cli.cli.train", "export_command", "export_command"),
}
SETTINGS = dict(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                rich_markup_mode="rich")


@functools.cache
def _docstrings(module: str) -> dict[str, str]:
    """The docstrings of a module's top-level functions, read from its source without
    importing it; each source file is parsed once (train and export share one)."""
    origin = importlib.util.find_spec(module).origin
    with open(origin, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            found.setdefault(node.name, ast.get_docstring(node) or "")
    return found


def _docstring(module: str, function: str) -> str:
    """A function's docstring read from its module's source, without importing the module."""
    return _docstrings(module).get(function, "")


class LazyCommand(TyperCommand):
    """Stands in for a model command in listings (its help is read from the source, only
    when something asks for it); parsing its arguments, its help page and running it go to
    the real command, built on first use."""

    _help: str | None = None

    def __init__(self, name: str):
        super().__init__(name)
        self._real: TyperCommand | None = None

    @property
    def help(self) -> str:
        if self._help is None:
            module, _, documented = LAZY[self.name]
            self._help = _docstring(module, documented)
        return self._help

    @help.setter
    def help(self, value: str | None) -> None:
        self._help = value

    def real(self) -> TyperCommand:
        if self._real is None:
            module, attribute, _ = LAZY[self.name]
            single = typer.Typer(**SETTINGS)
            single.command(self.name)(getattr(importlib.import_module(module), attribute))
            self._real = typer.main.get_command(single)
        return self._real

    def make_context(self, info_name, args, parent=None, **extra):
        return self.real().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx):
        return self.real().invoke(ctx)

    def get_params(self, ctx):
        return self.real().get_params(ctx)

    def get_help(self, ctx) -> str:
        return self.real().get_help(ctx)


class CommandGroup(TyperGroup):
    """dsspn's commands: the model commands (lazy) first, then hierarchy and data."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.commands = {**{name: LazyCommand(name) for name in LAZY}, **self.commands}


app = typer.Typer(
    name="dsspn",
    help="Hierarchical semantic segmentation (DSSPN): one concept tree, merged from the label "
         "sets of many datasets, drives the model.",
    cls=CommandGroup,
    **{**SETTINGS, "add_completion": True},     # --install-completion for bash, zsh, fish
)
app.add_typer(hierarchy_app, name="hierarchy")
app.add_typer(data_app, name="data")


def _version(value: bool):
    if value:
        print(f"dsspn {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")):
    """dsspn: merge label sets into a concept tree, then train, evaluate and predict with it."""


def main(argv: list[str] | None = None) -> None:
    for stream in (sys.stdout, sys.stderr):
        # A file name that is not valid UTF-8 (or a lone surrogate from JSON) is shown with
        # backslash escapes, never an encoding traceback halfway through a table.
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    previous = _catch_signals()
    shown_warning = warnings.showwarning
    warnings.showwarning = _warning_line
    try:
        code = app(args=argv, prog_name="dsspn", standalone_mode=False)
    except UserError as exc:
        # One line, no traceback: the message names the thing, the problem and the fix.
        _fail(one_line(str(exc)), exc.exit_code, exc.prefix)
    except Stopped as exc:
        _fail(one_line(str(exc)), exc.exit_code, exc.prefix)
    except (typer.Abort, click.exceptions.Abort, KeyboardInterrupt):
        _fail("interrupted", 130, "stopped")
    except TyperException as exc:        # click's usage errors: a bad option value, a typo
        _fail(_usage_error(exc), getattr(exc, "exit_code", 2))
    except BrokenPipeError:              # `dsspn ... | head`: the reader left, not an error
        sys.stderr.close()
        sys.exit(0)
    except OSError as exc:               # a path the system refused that no check foresaw
        _fail(str(os_error(exc)), 2)
    except MemoryError:
        _fail(OUT_OF_MEMORY, 2)
    except RuntimeError as exc:          # torch's allocators say it with a RuntimeError
        if type(exc).__name__ != "OutOfMemoryError" and "can't allocate memory" not in str(exc):
            raise
        _fail(f"{OUT_OF_MEMORY} ({one_line(str(exc))[:160]})", 2)
    finally:
        warnings.showwarning = shown_warning
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    sys.exit(code if isinstance(code, int) else 0)


OUT_OF_MEMORY = ("out of memory; give smaller inputs (image size, --crop, --batch-size, --tile) "
                 "or use a machine with more memory")


def _catch_signals() -> dict:
    """Ctrl-C and SIGTERM stop any command with one line and exit 128 + the signal's number
    (130, 143). Typer would turn a KeyboardInterrupt into a silent exit 130, and SIGTERM
    would kill the process without a word or its clean-up (temporary files). ``dsspn train``
    installs its own handlers for its run (faults.StopRequest)."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def stop(signum, frame):
        raise Stopped(signum, f"interrupted by {signal.Signals(signum).name}")

    return {signum: signal.signal(signum, stop) for signum in (signal.SIGINT, signal.SIGTERM)}


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """A library's warning as one line, not Python's two-line form with its source line."""
    print(one_line(f"warning: {message} ({category.__name__})"), file=file or sys.stderr)


def _usage_error(exc) -> str:
    """Click's usage error as one line, naming the command and where its help is."""
    if exc.__class__.__name__ == "NoArgsIsHelpError":
        return ""                        # the help has been shown: nothing to add
    ctx = getattr(exc, "ctx", None)
    path = ctx.command_path if ctx is not None else "dsspn"
    message = " ".join(exc.format_message().split())
    return f"{path}: {message[:1].lower() + message[1:]} (see '{path} --help')"


def _fail(message: str, code: int, prefix: str = "error") -> None:
    from dsspn_cli.console import stop_all

    stop_all()                           # a live bar left by the failed work goes first
    if message:
        print(f"{prefix}: {message}", file=sys.stderr)
    sys.exit(code)
