"""Small file helpers shared by every layer: atomic writes and safe YAML reading."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from dsspn_cli.errors import UserError, one_line


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    A reader never sees a half-written file, and a failed write (unwritable folder, full disk)
    leaves the old file intact and raises a one-line UserError.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            # mkstemp creates 0600; give the file the permissions a plain open() would.
            os.fchmod(handle.fileno(), 0o666 & ~_umask())
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        tmp = None
        _sync_folder(path.parent)
    except OSError as exc:
        raise UserError(f"{path}: cannot write ({exc.strerror or exc}); check that the folder "
                        "is writable and the disk has space") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (a power cut right after must not undo it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:             # some file systems cannot sync a folder; the rename stands
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def read_text_file(path: str | os.PathLike, what: str, kind: str) -> str:
    """The UTF-8 text of a ``what`` file (a ``kind`` file: YAML, JSON), with one-line errors
    for a missing path, a folder, or unreadable bytes."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such {what} file; check the path")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, expected a {what} file")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the {what} file ({exc.__class__.__name__}); "
                        f"give a UTF-8 {kind} file") from None


def read_json(path: str | os.PathLike, what: str):
    """``json.loads`` of a file, with one-line errors that name the file and the line."""
    import json

    text = read_text_file(path, what, "JSON")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:    # JSONDecodeError, a 5000-digit number
        raise UserError(f"{path}: malformed JSON ({exc.__class__.__name__}: line "
                        f"{getattr(exc, 'lineno', '?')}); fix the {what} file") from None


def read_yaml(path: str | os.PathLike, what: str):
    """``yaml.safe_load`` of a file, with one-line errors that name the file and the line."""
    import yaml

    path = Path(path)
    text = read_text_file(path, what, "YAML")
    try:
        return yaml.safe_load(text)
    except RecursionError:
        raise UserError(f"{path}: nested too deeply to read; fix the {what} file") from None
    except (ValueError, TypeError, AttributeError, LookupError, OverflowError) as exc:
        # PyYAML fails to convert some values with a plain exception, not a YAMLError:
        # '2001-13-45', '!!int abc', '!!int' alone, '!!bool maybe', a 5000-digit number.
        detail = str(exc).split(";")[0] if isinstance(exc, ValueError) else type(exc).__name__
        raise UserError(one_line(f"{path}: malformed YAML (a value cannot be converted: "
                                 f"{detail[:100]}); fix the {what} file")) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise UserError(f"{path}:{where} malformed YAML ({problem}); fix the {what} file") from None
