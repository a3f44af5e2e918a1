"""The `mlops` CLI in fresh interpreters: fast imports, exit codes, one-line errors, JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "mlflow", "sklearn", "pandas", "optuna", "matplotlib")
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


def _heavy_after(code: str, cwd: Path) -> list[str]:
    probe = (
        f"{code}\nimport sys, json\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_building_the_app_imports_nothing_heavy(tmp_path: Path) -> None:
    code = (
        "import typer.main\n"
        "from mlops import cli\n"
        "cli._mount_subcommands()\n"
        "typer.main.get_command(cli.app)"
    )
    assert _heavy_after(code, tmp_path) == []


def test_help_and_version_import_nothing_heavy(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from mlops.cli import main\n"
        "for argv in (['mlops', '--help'], ['mlops', 'version', '--json'],"
        " ['mlops', 'params', 'check', '-f', 'missing.yaml']):\n"
        "    sys.argv = argv\n"
        "    try:\n"
        "        main()\n"
        "    except SystemExit:\n"
        "        pass"
    )
    assert _heavy_after(code, tmp_path) == []


def test_help_exits_zero(tmp_path: Path) -> None:
    done = _mlops("--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for command in ("version", "params", "registry", "doctor", "summary"):
        assert command in done.stdout


def test_no_arguments_shows_help(tmp_path: Path) -> None:
    done = _mlops(cwd=tmp_path)
    assert done.returncode in (0, 2)
    assert "params" in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("train:\n  learning_rate: -1\n", ["train.learning_rate", "-1"]),
        ("train:\n  model:\n    foo: 1\n", ["train.model.foo", "unknown key"]),
        (
            "pipeline:\n  name: not a valid name at all because it has spaces in it\n",
            ["pipeline.name", "not a valid name"],
        ),
    ],
)
def test_params_check_bad_file_exits_2_with_one_line(
    tmp_path: Path, text: str, fragments: list[str]
) -> None:
    (tmp_path / "bad.yaml").write_text(text)
    done = _mlops("params", "check", "-f", "bad.yaml", cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "bad.yaml" in lines[0]
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_params_check_missing_file_exits_2(tmp_path: Path) -> None:
    done = _mlops("params", "check", "--file", "nope.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert "nope.yaml: file not found" in done.stderr


def test_params_check_valid_file_exits_0(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text("train:\n  epochs: 3\n  learning_rate: 1e-3\n")
    done = _mlops("params", "check", "-f", "good.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "good.yaml: valid" in done.stdout
    assert done.stderr == ""


def test_params_check_repo_params_exits_0() -> None:
    done = _mlops("params", "check", "-f", str(REPO / "params.yaml"), cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "valid" in done.stdout


def test_unknown_option_exits_2(tmp_path: Path) -> None:
    done = _mlops("params", "check", "--bogus", cwd=tmp_path)
    assert done.returncode == 2


def test_version_json(tmp_path: Path) -> None:
    done = _mlops("version", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert {"mlops", "torch", "mlflow", "python"} <= set(found)
    assert all(isinstance(v, str) and v for v in found.values())
    assert found["torch"] != "not installed"


def test_params_check_json(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text("train:\n  epochs: 3\n")
    done = _mlops("params", "check", "-f", "good.yaml", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["valid"] is True and found["params"]["train"]["epochs"] == 3
