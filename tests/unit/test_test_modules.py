"""pytest names test modules by their file name (the test folders are not packages), so
two test files of one name in different folders fail collection of the whole suite."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_every_test_module_has_a_name_of_its_own() -> None:
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert names, "no test modules found"
    assert [n for n, count in names.items() if count > 1] == []
