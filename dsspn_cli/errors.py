"""The one error type users see: a one-line message, exit code 2, no traceback."""


class UserError(Exception):
    """Bad input: the message names the thing, the problem and the fix."""

    exit_code = 2
    prefix = "error"
