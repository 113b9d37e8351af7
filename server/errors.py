"""One error vocabulary for every side of ldam.

Anything the user can fix (a missing file, a wrong format, a bad target, an out-of-range
setting, a malformed message) raises a `UserError`: its text is one sentence for the user, and
`field` names the setting at fault when the place that raises it knows which one. The command
line prints the sentence and exits with status 2; the dashboard sends it to the browser as an
``error`` message with that field. The field is set where the problem is found, never guessed
from the text afterwards.

This module imports nothing, so the web server (no torch) and the worker share it.
"""

from __future__ import annotations


class UserError(ValueError):
    """A problem the user can fix; ``str(err)`` is one sentence, `field` the setting or None."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def with_field(self, field: str) -> UserError:
        """This error, naming `field` when it named none (the caller knows the setting)."""
        if self.field is None:
            self.field = field
        return self


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of `error`'s text, at most `limit` characters, without a closing full
    stop, so it can stand inside a sentence of ours; the exception's type name when it has no
    text (``KeyError()``)."""
    lines = str(error).strip().splitlines()
    line = lines[0].strip() if lines else type(error).__name__
    return line[:limit].rstrip(". ")
