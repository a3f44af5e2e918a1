"""`first_line`: the one line a one-line error quotes from a library's message."""

from __future__ import annotations

import pytest

from mlops.errors import first_line


@pytest.mark.parametrize(
    ("exc", "line"),
    [
        (ValueError("bad header\n  at byte 12\n"), "bad header"),
        (OSError("\n\n  disk gone  \nmore"), "disk gone"),  # leading blank lines skipped
        (KeyError(), "KeyError"),  # no message: the type names it
        (RuntimeError("   \n  "), "RuntimeError"),  # only whitespace counts as none
    ],
)
def test_first_line(exc: BaseException, line: str) -> None:
    assert first_line(exc) == line
