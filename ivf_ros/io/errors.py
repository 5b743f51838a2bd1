"""How errors read when they are passed on to a user: one line each."""

from __future__ import annotations


def first_line(error: BaseException) -> str:
    """Return an exception's first message line (its repr when it has no message)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else repr(error)
