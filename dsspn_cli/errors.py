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
