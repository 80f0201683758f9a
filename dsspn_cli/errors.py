"""The one error type users see: a one-line message, exit code 2, no traceback; and the
helpers that keep values read from files short and on one line in such messages."""

import reprlib


class UserError(Exception):
    """Bad input: the message names the thing, the problem and the fix."""

    exit_code = 2
    prefix = "error"


# str.splitlines() breaks lines at all of these; a message must stay on one line.
_LINE_BREAKS = str.maketrans({c: repr(c)[1:-1]
                              for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"})
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 2, 40, 40
_SHORT.maxlist = _SHORT.maxdict = _SHORT.maxtuple = _SHORT.maxset = 3


def one_line(text: str) -> str:
    """``text`` with its line breaks escaped ('a\\nb'), so that an error stays one line."""
    return text.translate(_LINE_BREAKS)


def shown(value) -> str:
    """A short, one-line repr of a value read from a file, for messages: bounded for huge or
    deeply nested values (YAML aliases can make a small file hold a billion-element list)."""
    try:
        return one_line(_SHORT.repr(value))
    except (ValueError, RecursionError):     # an int over 4300 digits, a pathological value
        return f"<{type(value).__name__}>"


class Stopped(BaseException):
    """A signal stopped the command at once: a BaseException, like KeyboardInterrupt, so that
    no ``except Exception`` swallows it, but not a KeyboardInterrupt, which click and Typer
    turn into a silent exit 130. The command exits with 128 + the signal's number."""

    prefix = "stopped"

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


# What an errno means to someone who gave a path, and what to do about it.
_OS_PROBLEMS = {
    "ENOENT": ("no such file or folder", "check the path"),
    "ENOTDIR": ("a part of the path is a file, not a folder", "check the path"),
    "EISDIR": ("it is a folder", "give a file name"),
    "EEXIST": ("it already exists", "remove it or choose another name"),
    "ENAMETOOLONG": ("a name in the path is longer than the file system allows (usually 255 "
                     "bytes)", "shorten it"),
    "ENOSPC": ("the disk is full", "free some space or write elsewhere"),
    "EDQUOT": ("the disk quota is used up", "free some space or write elsewhere"),
    "EFBIG": ("the file would exceed a file-size limit (ulimit -f) or the file system's",
              "raise the limit or write elsewhere"),
    "EACCES": ("permission denied", "check the permissions or choose another place"),
    "EPERM": ("operation not permitted", "check the permissions or choose another place"),
    "EROFS": ("the file system is read-only", "write elsewhere"),
    "ELOOP": ("too many levels of symbolic links", "check the links in the path"),
    "EIO": ("input/output error", "check the disk or the network file system"),
    "EMFILE": ("too many open files", "raise the limit (ulimit -n)"),
    "ENFILE": ("too many open files on the system", "close other programs or try again"),
    "EBUSY": ("the file or device is busy", "try again when it is free"),
    "ETXTBSY": ("the file is busy (a running program)", "choose another name"),
    "ENXIO": ("no such device, or a FIFO without a reader", "give a regular file"),
    "ESTALE": ("a stale network file handle", "remount or try again"),
}


def os_problem(exc: OSError) -> str:
    """'problem (ERRNO); fix' for an OSError, the way a user can act on it."""
    import errno

    name = errno.errorcode.get(exc.errno or 0, "")
    problem, fix = _OS_PROBLEMS.get(name, (exc.strerror or str(exc) or type(exc).__name__,
                                           "check the path"))
    code = f" ({name})" if name else ""
    return f"{problem}{code}; {fix}"


def os_error(exc: OSError, path=None, action: str = "use") -> UserError:
    """One line for an OSError on a path: '<path>: cannot <action>: <problem> (ERRNO); <fix>'.
    The path is the one the system names (``exc.filename``) when it names one."""
    where = exc.filename if exc.filename is not None else path
    prefix = f"{where}: " if where is not None else ""
    return UserError(one_line(f"{prefix}cannot {action}: {os_problem(exc)}"))
