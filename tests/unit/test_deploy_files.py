"""The service definitions in platform/deploy/ parse and run the commands that exist."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

from typer.testing import CliRunner

from mlops.cli import _mount_registry, app
from mlops.scheduling.cron import parse

DEPLOY = Path(__file__).resolve().parents[2] / "platform" / "deploy"


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=True, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((DEPLOY / name).read_text())
    return parser


def _help_ok(*words: str) -> bool:
    _mount_registry()
    return CliRunner().invoke(app, [*words, "--help"]).exit_code == 0


def test_scheduler_unit_runs_the_scheduler_and_stops_it_gracefully() -> None:
    unit = _unit("mlops-scheduler.service")
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    command = shlex.split(service["ExecStart"])
    assert command[0].endswith("/.venv/bin/mlops")
    assert command[1:] == ["scheduler", "start"]
    assert _help_ok(*command[1:])
    assert service["KillSignal"] == "SIGTERM"
    assert service["KillMode"] == "mixed"  # SIGTERM to the scheduler, which stops its runs
    assert int(service["TimeoutStopSec"]) > 60  # longer than the scheduler's own stop wait
    assert service["WorkingDirectory"] in service["ExecStart"]


def test_crontab_lines_are_valid_cron_running_run_now() -> None:
    lines = [
        line
        for line in (DEPLOY / "crontab").read_text().splitlines()
        if line.strip() and not line.startswith("#") and "=" not in line.split()[0]
    ]
    assert lines
    for line in lines:
        fields = line.split(None, 5)
        parse(" ".join(fields[:5]))  # raises on a bad expression
        command = fields[5]
        assert "mlops schedule run-now " in command
        assert "--from-cron" in command
    assert _help_ok("schedule", "run-now")
