"""What people and scripts read: one-line usage errors, help texts with plain metavars and
whole sentences, tables never cut to 80 columns, strict JSON, progress in logs."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import typer._click
from rich.console import Console

from mlops import cli, console

MAIN = "from mlops.cli import main; main()"


def _mlops(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", MAIN, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["serve", "digits@production", "--port", "70000"], "--port"),
        (["registry", "list", "--limit", "0"], "--limit"),
        (["sweep", "run", "--workers", "0"], "--workers"),
        (["registry", "list", "--bogus"], "--bogus"),
        (["registry", "show", "digits"], "REF"),
        (["nosuch"], "nosuch"),
    ],
)
def test_usage_mistakes_are_one_line_and_exit_2(
    tmp_path: Path, args: list[str], fragment: str
) -> None:
    done = _mlops(*args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert fragment in lines[0]
    assert "--help" in lines[0]  # where to look next
    assert done.stdout == ""


def _commands() -> Iterator[tuple[str, Any]]:
    cli._mount_subcommands()
    root = cli.tidy_help(typer.main.get_command(cli.app))

    def walk(command: Any, path: str) -> Iterator[tuple[str, Any]]:
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, f"{path} {name}")

    yield from walk(root, "mlops")


def _help(command: Any, path: str) -> str:
    ctx = typer._click.Context(command, info_name=path, terminal_width=80, max_content_width=80)
    return str(command.get_help(ctx))


def test_help_texts_use_plain_metavars() -> None:
    checked = 0
    for path, command in _commands():
        text = _help(command, path)
        assert "<bool>" not in text, f"{path}:\n{text}"
        assert not re.search(r"<(str|int|float|path)[^>]*>", text), f"{path}:\n{text}"
        assert not re.search(r"\{[A-Za-z_]+\}", text), f"{path}:\n{text}"
        checked += 1
    assert checked > 30  # every command of every sub-app was looked at


def test_help_texts_never_break_a_sentence_mid_line() -> None:
    for path, command in _commands():
        text = _help(command, path)
        description = text.split("\n\n", 1)[1].split("\nArguments:")[0].split("\nOptions:")[0]
        for paragraph in description.strip().split("\n\n"):
            lines = paragraph.splitlines()
            for line in lines[:-1]:  # a wrapped line fills the width; only the last is short
                assert len(line) >= 50, f"{path}: a short line inside a paragraph: {line!r}"


def test_help_shows_the_argument_by_name(tmp_path: Path) -> None:
    done = _mlops("serve", "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Usage: mlops serve [OPTIONS] TARGET" in done.stdout
    assert "--port INTEGER" in done.stdout


def test_a_table_in_a_log_keeps_every_value_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = io.StringIO()
    monkeypatch.setattr(console, "out", Console(file=buffer, highlight=False, width=80))
    long = "sqlite:////srv/a/very/long/project/path/" + "x" * 120 + "/mlflow.db"
    sha = "f" * 64
    console.table("Where", ["what", "where", "sha256"], [("tracking", long, sha)])
    lines = buffer.getvalue().splitlines()
    assert any(long in line and sha in line for line in lines), buffer.getvalue()


def test_a_piped_command_never_wraps_a_path(tmp_path: Path) -> None:
    deep = tmp_path / ("a-folder-with-a-long-name-" * 4) / "project"
    deep.mkdir(parents=True)
    (deep / ".dvc").mkdir()
    done = _mlops("doctor", cwd=deep)
    # the folder is > 100 characters: it must come out on one line, whole
    assert str(deep) in done.stdout, done.stdout


def test_json_output_is_strict_json(capsys: pytest.CaptureFixture[str]) -> None:
    console.emit_json({"grace": float("inf"), "values": [1.0, float("nan")]})
    text = capsys.readouterr().out
    assert "Infinity" not in text and "NaN" not in text
    assert json.loads(text) == {"grace": None, "values": [1.0, None]}


def test_status_prints_plain_lines_in_a_log(capsys: pytest.CaptureFixture[str]) -> None:
    with console.status("loading digits@production") as update:
        update("verifying 3 files")
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert lines[0] == "loading digits@production"
    assert re.fullmatch(r"verifying 3 files \(\d+\.\d s\)", lines[1]), lines
