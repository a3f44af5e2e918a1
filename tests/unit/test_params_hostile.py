"""Hostile params files: whatever a file holds, reading it is bounded in size, nesting
and expansion, and a bad one is one line naming it (exit 2), never a traceback."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from mlops import safe_yaml
from mlops.errors import UserError
from mlops.params import load_params
from mlops.safe_yaml import MAX_DEPTH, MAX_FILE_BYTES

CLI = [sys.executable, "-c", "from mlops.cli import main; main()"]
MEMORY_LIMIT = 2 * 1024**3  # the unbounded read took 12.7 GB of /dev/zero


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _check(path: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "params", "check", "-f", str(path)], cwd=cwd, capture_output=True, text=True,
        timeout=120, preexec_fn=_limit_memory,
    )  # fmt: skip


def _one_line(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-2000:]
    for word in words:
        assert word in lines[0], lines[0]


def test_dev_zero_is_refused_without_reading_it(tmp_path: Path) -> None:
    _one_line(_check("/dev/zero", tmp_path), "/dev/zero", "not a regular file")


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "params.yaml"
    os.mkfifo(fifo)
    _one_line(_check(fifo, tmp_path), str(fifo), "not a regular file")


def test_deep_nesting_is_one_line(tmp_path: Path) -> None:
    deep = tmp_path / "deep.yaml"
    deep.write_text("train:\n  model: " + "[" * 1000 + "]" * 1000 + "\n")
    _one_line(_check(deep, tmp_path), str(deep), f"nested deeper than {MAX_DEPTH}")
    block = tmp_path / "block.yaml"
    block.write_text("train:\n" + "".join("  " * (i + 1) + "-\n" for i in range(1000)))
    _one_line(_check(block, tmp_path), str(block), f"nested deeper than {MAX_DEPTH}")


def test_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * (MAX_FILE_BYTES // 10 + 1))
    with pytest.raises(UserError, match=r"larger than 1 MiB") as info:
        load_params(big)
    assert str(info.value).startswith(f"{big}: ")


def test_alias_expansion_bomb_is_refused_while_composing(tmp_path: Path) -> None:
    # Nine levels of ten aliases stand for 10^10 values: anything that walks the loaded
    # document (a dump, a diff of params) would never end. Refused before it is built.
    lines = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError) as info:
        safe_yaml.load(bomb)
    assert str(info.value).startswith(f"{bomb}: line 5,")  # a4: 111,111 values
    assert f"more than {safe_yaml.MAX_NODES} values (counting what aliases repeat)" in str(
        info.value
    )
    _one_line(_check(bomb, tmp_path), str(bomb), "aliases repeat")


def test_merge_keys_and_small_aliases_still_work(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(
        "base: &b {seed: 3, val_fraction: 0.2}\nsplit:\n  <<: *b\n  test_fraction: 0.1\n"
    )
    with pytest.raises(UserError, match="base: unknown key"):
        load_params(path)  # only the split section is meant to take the anchor
    path.write_text("split: &s {seed: 3}\n")
    assert load_params(path).split.seed == 3


LOAD_AUTH = """
import sys
from pathlib import Path
from mlops.errors import UserError
from mlops.server import auth
try:
    auth.load(Path(sys.argv[1]))
except UserError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(exc.exit_code)
"""


@pytest.mark.parametrize("name", ["/dev/zero", "deep.yaml"])
def test_the_server_users_file_is_read_bounded(tmp_path: Path, name: str) -> None:
    (tmp_path / "deep.yaml").write_text("users: " + "[" * 1000 + "]" * 1000 + "\n")
    done = subprocess.run(
        [sys.executable, "-c", LOAD_AUTH, name], cwd=tmp_path, capture_output=True, text=True,
        timeout=120, preexec_fn=_limit_memory,
    )  # fmt: skip
    _one_line(done, name)
