"""Small file helpers shared by every layer: the one output writer (checked before the work,
written atomically), and safe reading of the files users give (YAML, JSON, text)."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from dsspn_cli.errors import UserError, one_line, os_error, os_problem


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def stat_path(path: str | os.PathLike, action: str = "read") -> os.stat_result | None:
    """``os.stat`` of a path the user gave (links followed); None when nothing is there (or a
    link points nowhere); any other failure (a name too long, no permission, a link loop) is
    a one-line UserError, where ``Path.exists()`` would raise a traceback."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise os_error(exc, path, action) from None
    except ValueError:                  # a NUL byte in the path
        raise UserError(one_line(f"{path!r}: not a usable path (it holds a NUL byte)")) from None


def kind_of(mode: int) -> str:
    """What a file that is not a regular one is, in words."""
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _nearest_folder(path: Path, target: Path) -> Path:
    """The deepest existing folder above ``path`` (or ``path`` itself); an ancestor that is a
    file is a one-line error naming it."""
    current = Path(os.path.abspath(path))
    while True:
        st = stat_path(current, "write")
        if st is not None:
            break
        current = current.parent
    if not stat.S_ISDIR(st.st_mode):
        what = "a file" if stat.S_ISREG(st.st_mode) else kind_of(st.st_mode)
        raise UserError(one_line(f"{target}: cannot write: {current} is {what}, not a folder; "
                                 "give a path inside a folder"))
    return current


def _check_names(path: Path) -> None:
    """Every name in the path fits the file system (255 bytes on most): checked up front,
    where the system would say only 'File name too long'."""
    folder = os.path.abspath(path)
    while not os.path.isdir(folder) and folder != os.path.dirname(folder):
        folder = os.path.dirname(folder)
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    for part in path.parts:
        size = len(os.fsencode(part))
        if size > limit:
            raise UserError(one_line(f"{path}: the name '{part[:40]}...' is {size} bytes, longer "
                                     f"than the file system allows ({limit}); shorten it"))


def _identity(path) -> tuple[int, int] | None:
    """(device, inode) of an existing file, None otherwise: one file under any name."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def check_output(path: str | os.PathLike, *, inputs=(), folder: bool = False,
                 writes=()) -> Path:
    """Check, before any work, that an output can be written where the user asked: not one
    of the command's ``inputs`` (for a folder: none of the files it ``writes`` inside), not a
    folder where a file goes (or a file where a folder goes), never a link, FIFO, device or
    socket (outputs are replaced whole), names the file system accepts, and a writable
    folder to hold it. A one-line UserError otherwise; nothing is created."""
    path = Path(path)
    _check_names(path)
    if not folder:
        _refuse_link(path)
    st = stat_path(path, "write")
    if st is not None:
        if folder and not stat.S_ISDIR(st.st_mode):
            what = "a file" if stat.S_ISREG(st.st_mode) else kind_of(st.st_mode)
            raise UserError(one_line(f"{path}: exists and is {what}, not a folder; give a "
                                     "folder"))
        if not folder and not stat.S_ISREG(st.st_mode):
            raise _not_regular(path, st.st_mode)
    above = _nearest_folder(path if folder else path.parent, path)
    read = {_identity(given): given for given in inputs if given is not None}
    read.pop(None, None)
    for target in [path / name for name in writes] if folder else [path]:
        if folder and st is not None:        # files already in the folder, to be replaced
            _refuse_link(target)
            found = stat_path(target, "write")
            if found is not None and not stat.S_ISREG(found.st_mode):
                raise _not_regular(target, found.st_mode)
        given = read.get(_identity(target)) if read else None
        if given is not None:
            raise UserError(one_line(
                f"{target}: is also an input of this command ({given}); writing it would "
                "replace what is being read; give another output "
                + ("folder" if folder else "name")))
    if not os.access(above, os.W_OK | os.X_OK):
        raise UserError(one_line(f"{path}: cannot write: {above} is not writable "
                                 f"({_why_not_writable(above)}); choose another place"))
    return path


def _why_not_writable(folder: Path) -> str:
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "the file system is read-only, EROFS"
    except OSError:
        pass
    return "permission denied, EACCES"


def _refuse_link(path: Path) -> None:
    if os.path.islink(path):
        raise UserError(one_line(f"{path}: is a symbolic link (to {os.readlink(path)}); dsspn "
                                 "neither replaces a link nor writes through one: give the "
                                 "path of the file itself"))


def _not_regular(path: Path, mode: int) -> UserError:
    if stat.S_ISDIR(mode):
        return UserError(one_line(f"{path}: is a folder; give a file name (inside it, say)"))
    return UserError(one_line(f"{path}: is {kind_of(mode)}; dsspn writes an output as a new "
                              "regular file renamed into place and does not replace this; give "
                              "a file name"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    A reader never sees a half-written file, and a failed write (unwritable folder, full disk)
    leaves the old file intact and raises a one-line UserError that says which. A symbolic
    link, a folder, a FIFO, a device or a socket at ``path`` is never replaced nor written
    through (a link planted where an output goes must not aim the write elsewhere, and
    replacing '/dev/stdout' would break the system).
    """
    path = Path(path)
    _refuse_link(path)
    st = stat_path(path, "write")
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise _not_regular(path, st.st_mode)
    tmp = None
    try:
        if not path.parent.is_dir():
            _nearest_folder(path.parent, path)
            path.parent.mkdir(parents=True, exist_ok=True)
        # The temporary name must fit too: at most 180 bytes of the name (255 is the limit).
        short = os.fsdecode(os.fsencode(path.name)[:180])
        fd, tmp = tempfile.mkstemp(prefix=f".{short}.", suffix=".tmp", dir=path.parent)
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
        raise UserError(one_line(f"{path}: cannot write: {os_problem(exc)}")) from None
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
    st = stat_path(path, f"read the {what} file")
    if st is None:
        raise UserError(one_line(f"{path}: no such {what} file; check the path"))
    if stat.S_ISDIR(st.st_mode):
        raise UserError(one_line(f"{path}: is a folder, expected a {what} file"))
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISFIFO(st.st_mode)):    # <(...) is a FIFO
        raise UserError(one_line(f"{path}: is {kind_of(st.st_mode)}, expected a {what} file"))
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(one_line(f"{path}: cannot read the {what} file (not UTF-8 text); "
                                 f"give a UTF-8 {kind} file")) from None
    except OSError as exc:
        raise os_error(exc, path, f"read the {what} file") from None


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
