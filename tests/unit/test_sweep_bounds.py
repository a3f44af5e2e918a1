"""Numbers given to sweep and schedule commands: past their bounds, NaN or infinite, they
are one line naming the option (exit 2), before anything runs or is written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlops.errors import UserError
from mlops.scheduling import service
from mlops.scheduling.store import Schedule

HUGE = "99999999999999999999"
CRON = ["--cron", "0 2 * * *"]


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["sweep", "run", "--trials", HUGE], "--trials"),
        (["sweep", "run", "--timeout", "nan"], "--timeout"),
        (["sweep", "run", "--timeout", "inf"], "--timeout"),
        (["sweep", "run", "--threads", "5000"], "--threads"),
        (["sweep", "worker", "s", "--trials", HUGE], "--trials"),
        (["sweep", "worker", "s", "--total", HUGE], "--total"),
        (["schedule", "add", "x", *CRON, "--trials", HUGE], "--trials"),
        (["schedule", "add", "x", *CRON, "--grace", "inf"], "--grace"),
        (["schedule", "add", "x", *CRON, "--grace", "nan"], "--grace"),
        (["schedule", "add", "x", *CRON, "--timeout", "nan"], "--timeout"),
        (["schedule", "add", "x", *CRON, "--workers", HUGE], "--workers"),
        (["schedule", "history", "x", "--limit", HUGE], "--limit"),
    ],
)
def test_out_of_bounds_numbers_are_one_line(tmp_path: Path, args: list[str], option: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from mlops.cli import main; main()", *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert option in lines[0], lines[0]
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert not (tmp_path / ".mlops").exists()  # nothing written


@pytest.mark.parametrize(
    ("field", "value"),
    [("grace", float("inf")), ("grace", float("nan")), ("timeout", float("inf")),
     ("trials", 10**20), ("workers", 0)],
)  # fmt: skip
def test_the_service_refuses_them_too(field: str, value: float) -> None:
    """Any caller of `schedule add`'s service, not only the CLI."""
    fields: dict[str, object] = {"name": "x", "pipeline": "digits", "cron": "0 2 * * *"}
    fields |= {"timezone": "UTC", "trials": 20, "workers": 1, field: value}
    draft = Schedule(**fields)  # type: ignore[arg-type]
    with pytest.raises(UserError, match=f"--{field}"):
        service.check_numbers(draft)


def test_a_tune_timeout_past_a_year_is_refused_by_params_check(tmp_path: Path) -> None:
    """The same bound as `--timeout`: refused when params.yaml is read, not later by the
    worker that `sweep run` starts."""
    repo = Path(__file__).resolve().parents[2]
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["tune"]["timeout"] = 1e8  # about three years
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    done = subprocess.run(
        [sys.executable, "-c", "from mlops.cli import main; main()", "params", "check"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "tune.timeout" in done.stderr, done.stderr
