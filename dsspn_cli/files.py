"""Small file helpers shared by every layer: the one output writer (checked before the work,
written atomically), and safe reading of the files users give (YAML, JSON, text)."""

from __future__ import annotations

import errno
import os
import secrets
import stat
from contextlib import contextmanager
from pathlib import Path

from dsspn_cli.errors import UserError, one_line, os_error, os_problem


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
    """Check, before any work, that an output can be written where the user asked, and return
    it as a Path. A one-line UserError otherwise; nothing is created.

    ``inputs``: every path the command reads (files and folders). The output may not be one
    of them, lie inside one, nor (a folder) hold one: what is read is never replaced, and
    nothing written lands among what is read.
    ``folder``: the output is a folder; ``writes`` are the paths the command writes inside it
    ('city/a.png'; 'checkpoints/' a sub-folder; 'step-*.pt' whatever exists by that pattern).
    Below the folder the user named, no part of any of them may be a link (a link there would
    aim the write elsewhere), a FIFO, device or socket (which would block it or be replaced),
    or a file where a folder goes.
    A file output is never a link, a FIFO, device or socket, nor a folder; a trailing '/'
    names a folder, so it is refused for a file. Names must fit the file system, and the folder
    that will hold the output must be writable."""
    text = os.fspath(path)
    if not folder and text.endswith(("/", os.sep)) and text.strip("/" + os.sep):
        raise UserError(one_line(f"{text}: ends with '/', which names a folder, but this output "
                                 f"is a file; give the file's name ({text}NAME, say)"))
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
    inputs = [given for given in inputs if given is not None]
    read = {_identity(given): given for given in inputs}
    read.pop(None, None)
    if folder:
        existing = _check_writes(path, _expand(path, writes)) if st is not None else {}
    else:
        existing = {path: _identity(path)}
    # The most precise complaint first: a file the command would write is one it reads.
    for target, identity in existing.items():
        given = read.get(identity)
        if given is not None:
            raise UserError(one_line(
                f"{target}: is also an input of this command ({given}); writing it would "
                "replace what is being read; give another output "
                + ("folder, or move the input out of this one" if folder else "name")))
    _refuse_overlap(path, folder, inputs)
    if not os.access(above, os.W_OK | os.X_OK):
        raise UserError(one_line(f"{path}: cannot write: {above} is not writable "
                                 f"({_why_not_writable(above)}); choose another place"))
    return path


def _expand(root: Path, writes) -> list[tuple[str, bool]]:
    """(relative path, whether it is a folder) of every write below ``root``: names as given,
    patterns as the entries that exist now (the files a run replaces or removes)."""
    import glob

    found = []
    for name in writes:
        is_folder = name.endswith("/")
        name = name.rstrip("/")
        if glob.has_magic(name):
            found += [(match, is_folder) for match in sorted(
                glob.glob(name, root_dir=root, include_hidden=True))]
        else:
            found.append((name, is_folder))
    return found


def _check_writes(root: Path, writes) -> dict[Path, tuple[int, int]]:
    """Each part of every write (relative path, whether a folder) below ``root`` that exists
    is a real folder (the last: a regular file, or a folder for a folder), never a link.
    Returns the identities of the files already there (to be replaced)."""
    folders: dict[str, bool] = {}       # a part checked once: a folder there, or nothing
    existing = {}
    for relative, is_folder in writes:
        current = os.fspath(root)          # strings: thousands of images, each a few parts
        parts = [part for part in relative.split(os.sep) if part]
        for depth, part in enumerate(parts, start=1):
            current = os.path.join(current, part)
            last = depth == len(parts) and not is_folder
            if not last and current in folders:
                if folders[current]:
                    continue
                break
            try:
                st = os.lstat(current)
            except (FileNotFoundError, NotADirectoryError):
                folders[current] = False
                break                         # not there yet: dsspn creates it
            except OSError as exc:
                raise os_error(exc, current, "write") from None
            if stat.S_ISLNK(st.st_mode):
                _refuse_link(Path(current))
            if last:
                if not stat.S_ISREG(st.st_mode):
                    raise _not_regular(Path(current), st.st_mode)
                existing[Path(current)] = (st.st_dev, st.st_ino)
            elif stat.S_ISDIR(st.st_mode):
                folders[current] = True
            else:
                what = "a file" if stat.S_ISREG(st.st_mode) else kind_of(st.st_mode)
                raise UserError(one_line(
                    f"{current}: is {what}, where this command writes a folder ({root / relative}"
                    "); remove or rename it, or give another output folder"))
    return existing


def _refuse_overlap(path: Path, folder: bool, inputs) -> None:
    """The output is not an input, does not lie inside an input folder, and (a folder) holds
    no input. Compared as files (device and inode) along the real paths, so that links, hard
    links and other spellings of a path are all seen through."""
    known: dict[str, tuple | None] = {}

    def chain(given) -> list:
        """Identities of a path's real location and of every folder above it."""
        real, found = os.path.realpath(given), []
        while True:
            if real not in known:
                known[real] = _identity(real)
            found.append(known[real])
            parent = os.path.dirname(real)
            if parent == real:
                return found
            real = parent

    outside = chain(path)
    itself = outside[0]
    for given in inputs:
        mine = _identity(given)
        if mine is None:                 # not there: nothing to protect (its reader says so)
            continue
        if mine == itself:
            raise UserError(one_line(
                f"{path}: is also an input of this command ({given}); writing it would replace "
                "what is being read; give another output " + ("folder" if folder else "name")))
        if mine in outside[1:]:
            raise UserError(one_line(
                f"{path}: lies inside {given}, an input of this command; dsspn writes nothing "
                "into what it reads (it could replace a file there, or be read back as one); "
                "give an output outside it"))
        if folder and itself is not None and itself in chain(given)[1:]:
            raise UserError(one_line(
                f"{path}: holds {given}, an input of this command; dsspn writes nothing into a "
                "folder holding what it reads (it could replace it); give another output "
                "folder, or move the input out of this one"))


def _why_not_writable(folder: Path) -> str:
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "the file system is read-only, EROFS"
    except OSError:
        pass
    return "permission denied, EACCES"


def _refuse_link(path: Path, folder_fd: int | None = None) -> None:
    """A UserError when ``path`` (or, with ``folder_fd``, its name in that folder) is a
    symbolic link."""
    where = path.name if folder_fd is not None else path
    try:
        st = os.stat(where, dir_fd=folder_fd, follow_symlinks=False)
    except (OSError, ValueError):
        return
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(where, dir_fd=folder_fd)
        raise UserError(one_line(f"{path}: is a symbolic link (to {target}); dsspn neither "
                                 "replaces a link nor writes through one: give the path of "
                                 "the file itself"))


def _not_regular(path: Path, mode: int) -> UserError:
    if stat.S_ISDIR(mode):
        return UserError(one_line(f"{path}: is a folder; give a file name (inside it, say)"))
    return UserError(one_line(f"{path}: is {kind_of(mode)}; dsspn writes an output as a new "
                              "regular file renamed into place and does not replace this; give "
                              "a file name"))


# Writing. Each write opens its folder by descriptor, starting at ``within`` (the folder the
# user named; by default the nearest existing folder above) and taking every part below it
# without following a link, then works by name inside it: a link planted among dsspn's own
# sub-folders or files is refused, never followed, even if it appears after the check.

_FOLDER = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)


def _open_folder(folder: Path, within: str | os.PathLike | None = None) -> int:
    """A descriptor of ``folder``, created (with its missing parents) if needed."""
    folder = Path(os.path.abspath(folder))
    if within is None:
        base = _nearest_folder(folder, folder)
    else:
        base = Path(os.path.abspath(within))
        base.mkdir(parents=True, exist_ok=True)
    fd = os.open(base, _FOLDER)
    current = base
    try:
        for part in folder.relative_to(base).parts:
            current = current / part
            try:
                os.mkdir(part, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                inner = os.open(part, _FOLDER | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    _refuse_link(current, fd)
                    raise UserError(one_line(f"{current}: is not a folder; remove or rename "
                                             "it, or write elsewhere")) from None
                raise
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_name(path: Path, folder_fd: int) -> None:
    """What is at ``path`` now may be replaced: nothing, or a regular file."""
    _refuse_link(path, folder_fd)
    try:
        st = os.stat(path.name, dir_fd=folder_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(path, st.st_mode)


def _temporary_name(name: str) -> str:
    """A hidden name beside ``name``, '.NAME.RANDOM.tmp' (what a killed run leaves is found
    by that pattern and removed); it must fit too: at most 180 bytes of the name (255 is
    the limit)."""
    short = os.fsdecode(os.fsencode(name)[:180])
    return f".{short}.{secrets.token_hex(4)}.tmp"


def _temporary(folder_fd: int, name: str) -> tuple[str, int]:
    """A new file beside ``name`` (created, never opened through a link), and its name."""
    while True:
        temporary = _temporary_name(name)
        try:
            # 0o666 less the umask: the permissions a plain open() would give.
            return temporary, os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                                      | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o666,
                                      dir_fd=folder_fd)
        except FileExistsError:
            continue


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *,
                       within: str | os.PathLike | None = None) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    A reader never sees a half-written file, and a failed write (unwritable folder, full disk)
    leaves the old file intact and raises a one-line UserError that says which. A symbolic
    link, a folder, a FIFO, a device or a socket at ``path`` is never replaced nor written
    through (a link planted where an output goes must not aim the write elsewhere, and
    replacing '/dev/stdout' would break the system); nor is a link among the folders below
    ``within`` (see ``_open_folder``).
    """
    path = Path(path)
    # The one way a file is written whole: ``atomic_stream``, here with one write, whose
    # failure (a full disk) is one line as well.
    try:
        with atomic_stream(path, within=within) as stream:
            stream.write(data)
    except OSError as exc:
        raise UserError(one_line(f"{path}: cannot write: {os_problem(exc)}")) from None
    return path


@contextmanager
def atomic_stream(path: str | os.PathLike, *, within: str | os.PathLike | None = None):
    """``with atomic_stream(path) as stream: ...``: a binary file written piece by piece (a
    video as it is encoded), through a temporary file beside ``path`` that is renamed into
    place when the block ends without an error. On an error or a signal the temporary file
    is removed and whatever was at ``path`` stays as it was: no half-written output, ever.
    Links and special files are refused as by ``atomic_write_bytes``. What the block raises
    passes through unchanged; failures of the file's own creation or rename are one line."""
    path = Path(path)
    fd = temporary = None
    try:
        try:
            fd = _open_folder(path.parent, within)
            _check_name(path, fd)
            temporary, handle = _temporary(fd, path.name)
        except OSError as exc:
            raise UserError(one_line(f"{path}: cannot write: {os_problem(exc)}")) from None
        with os.fdopen(handle, "w+b") as stream:       # w+: muxers seek back and read
            yield stream
            try:
                stream.flush()
                os.fsync(stream.fileno())
            except OSError as exc:
                raise UserError(one_line(f"{path}: cannot write: {os_problem(exc)}")) from None
        try:
            # A rename replaces the name itself: a link that appeared there since is
            # replaced, never followed.
            os.replace(temporary, path.name, src_dir_fd=fd, dst_dir_fd=fd)
            temporary = None
            _sync(fd)
        except OSError as exc:
            raise UserError(one_line(f"{path}: cannot write: {os_problem(exc)}")) from None
    finally:
        if fd is not None:
            if temporary is not None:
                _unlink(temporary, fd)
            os.close(fd)


def append_text(path: str | os.PathLike, text: str, *,
                within: str | os.PathLike | None = None) -> Path:
    """Append ``text`` to the log ``path`` (created if missing). Never through a link, and
    never blocking: a FIFO there would wait for a reader for ever; both are refused."""
    path = Path(path)
    fd = None
    try:
        fd = _open_folder(path.parent, within)
        _check_name(path, fd)
        try:
            handle = os.open(path.name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                             | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), 0o666, dir_fd=fd)
        except OSError as exc:     # it changed since the check: a link (ELOOP), a FIFO (ENXIO)
            if exc.errno in (errno.ELOOP, errno.ENXIO):
                _check_name(path, fd)
            raise
        with os.fdopen(handle, "a", encoding="utf-8") as stream:
            mode = os.fstat(stream.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise _not_regular(path, mode)
            stream.write(text)
    except OSError as exc:
        raise UserError(one_line(f"{path}: cannot write: {os_problem(exc)}")) from None
    finally:
        if fd is not None:
            os.close(fd)
    return path


def make_folder(path: str | os.PathLike, *, within: str | os.PathLike | None = None) -> Path:
    """Create the folder ``path`` (and its parents) the way writes open it: no part below
    ``within`` may be a link. For folders another library fills (TensorBoard's)."""
    try:
        os.close(_open_folder(Path(path), within))
    except OSError as exc:
        raise UserError(one_line(f"{path}: cannot write: {os_problem(exc)}")) from None
    return Path(path)


def link_into_place(source: str | os.PathLike, target: str | os.PathLike, *,
                    within: str | os.PathLike | None = None) -> Path:
    """Give the finished file ``source`` a second name ``target`` in the same folder (last.pt,
    best.pt) without a moment of half a file there: a hard link where the file system has
    them (no space, no time; files are never written in place, so sharing one is safe), else
    a copy; then a rename. Neither name is followed if it is a link."""
    source, target = Path(source), Path(target)
    fd = temporary = None
    try:
        fd = _open_folder(target.parent, within)
        _check_name(target, fd)
        temporary = _temporary_name(target.name)
        try:
            os.link(source.name, temporary, src_dir_fd=fd, dst_dir_fd=fd,
                    follow_symlinks=False)
        except OSError:                   # no hard links here (FAT, some network shares)
            _copy(source.name, temporary, fd)
        os.replace(temporary, target.name, src_dir_fd=fd, dst_dir_fd=fd)
        temporary = None
        _sync(fd)
    except OSError as exc:
        raise UserError(one_line(f"{target}: cannot write: {os_problem(exc)}")) from None
    finally:
        if fd is not None:
            if temporary is not None:
                _unlink(temporary, fd)
            os.close(fd)
    return target


def _copy(source: str, target: str, folder_fd: int) -> None:
    import shutil

    reading = os.open(source, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=folder_fd)
    with os.fdopen(reading, "rb") as src:
        writing = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666,
                          dir_fd=folder_fd)
        with os.fdopen(writing, "wb") as dst:
            shutil.copyfileobj(src, dst, 2**20)
            dst.flush()
            os.fsync(dst.fileno())


def _unlink(name: str, folder_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=folder_fd)
    except OSError:
        pass


def _sync(folder_fd: int) -> None:
    """Make a rename itself durable (a power cut right after must not undo it)."""
    try:
        os.fsync(folder_fd)
    except OSError:             # some file systems cannot sync a folder; the rename stands
        pass


def atomic_write_text(path: str | os.PathLike, text: str, *,
                      within: str | os.PathLike | None = None) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), within=within)


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
    """``yaml.safe_load`` of a file, with one-line errors that name the file and the line
    (through ``yamltext.load``, the reader ``--set`` values go through too)."""
    from dsspn_cli.yamltext import TooDeep, YamlProblem, load

    path = Path(path)
    text = read_text_file(path, what, "YAML")
    try:
        return load(text)
    except TooDeep as exc:
        raise UserError(f"{path}: {exc.problem}; fix the {what} file") from None
    except YamlProblem as exc:
        where = f" line {exc.line}" if exc.line is not None else ""
        raise UserError(one_line(f"{path}:{where} malformed YAML ({exc.problem}); fix the "
                                 f"{what} file")) from None
