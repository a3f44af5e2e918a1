"""Stage runs on a real MLflow SQLite store: statuses on success, failure, Ctrl-C,
SIGTERM, and recovery of runs left RUNNING by a process killed with SIGKILL."""

from __future__ import annotations

import getpass
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from mlops import tracking
from mlops.settings import Settings

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from mlops.settings import Settings
    from mlops import tracking
    settings = Settings.from_env(env={}, cwd=Path(sys.argv[1]))
    with tracking.stage_run(settings, "exp", "train") as run_id:
        print(run_id, flush=True)
        time.sleep(120)
    """
)


def _status(run_id: str) -> str:
    return str(MlflowClient().get_run(run_id).info.status)


def _start_holder(project: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(project)],
        stdout=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "DVC_"))},
    )
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    assert run_id, "the holder process did not open a run"
    return proc, run_id


def test_success_finishes_with_process_tags(settings: Settings) -> None:
    with tracking.stage_run(settings, "exp", "ingest", tags={"extra": "1"}) as run_id:
        tracking.log_metrics({"rows": 3})
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags[tracking.TAG_STAGE] == "ingest"
    assert run.data.tags[tracking.TAG_PID] == str(os.getpid())
    assert run.data.tags["extra"] == "1"
    assert run.data.metrics["rows"] == 3


def test_experiment_artifacts_live_under_the_artifact_root(settings: Settings) -> None:
    experiment_id = tracking.ensure_experiment("exp", settings)
    location = MlflowClient().get_experiment(experiment_id).artifact_location
    assert location == f"{settings.artifact_root}/exp"
    assert tracking.ensure_experiment("exp", settings) == experiment_id


def test_exception_ends_failed(settings: Settings) -> None:
    ids = []
    with pytest.raises(ValueError), tracking.stage_run(settings, "exp", "train") as run_id:
        ids.append(run_id)
        raise ValueError("boom")
    assert _status(ids[0]) == "FAILED"


def test_keyboard_interrupt_ends_killed(settings: Settings) -> None:
    ids = []
    with pytest.raises(KeyboardInterrupt), tracking.stage_run(settings, "exp", "train") as run_id:
        ids.append(run_id)
        raise KeyboardInterrupt
    assert _status(ids[0]) == "KILLED"


def test_sigterm_ends_killed(settings: Settings, project: Path) -> None:
    proc, run_id = _start_holder(project)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) != 0
    assert _status(run_id) == "KILLED"


def test_run_of_sigkilled_process_is_closed_as_killed_on_next_start(
    settings: Settings, project: Path
) -> None:
    proc, run_id = _start_holder(project)
    proc.kill()
    proc.wait(timeout=30)
    assert _status(run_id) == "RUNNING"
    with tracking.stage_run(settings, "exp", "ingest"):
        pass
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags[tracking.TAG_CLOSED_BY] == "stale-run-recovery"


def test_run_of_a_live_process_is_left_running(settings: Settings, project: Path) -> None:
    proc, run_id = _start_holder(project)
    try:
        experiment_id = tracking.ensure_experiment("exp", settings)
        assert tracking.close_stale_runs(experiment_id) == []
        assert _status(run_id) == "RUNNING"
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert tracking.close_stale_runs(experiment_id) == [run_id]


def test_find_run_by_tag_returns_newest_finished(settings: Settings) -> None:
    with tracking.stage_run(settings, "exp", "train", tags={tracking.TAG_MODEL_SHA: "abc"}):
        pass
    time.sleep(0.01)
    with tracking.stage_run(
        settings, "exp", "train", tags={tracking.TAG_MODEL_SHA: "abc"}
    ) as newer:
        pass
    with (
        pytest.raises(RuntimeError),
        tracking.stage_run(settings, "exp", "train", tags={tracking.TAG_MODEL_SHA: "abc"}),
    ):
        raise RuntimeError
    assert tracking.find_run_by_tag("exp", tracking.TAG_MODEL_SHA, "abc", "train") == newer
    assert tracking.find_run_by_tag("exp", tracking.TAG_MODEL_SHA, "zzz", "train") is None
    assert tracking.find_run_by_tag("nope", tracking.TAG_MODEL_SHA, "abc", "train") is None


def test_metrics_buffer_sends_everything_in_batches(settings: Settings) -> None:
    with tracking.stage_run(settings, "exp", "train") as run_id:
        buffer = tracking.MetricsBuffer(run_id, window_seconds=3600)
        for step in range(1, 1201):
            buffer.add({"loss": 1.0 / step, "acc": step / 1200}, step)
        assert MlflowClient().get_metric_history(run_id, "loss") == []  # still buffered
        buffer.flush()
    client = MlflowClient()
    history = client.get_metric_history(run_id, "loss")
    assert [m.step for m in history] == list(range(1, 1201))
    assert client.get_run(run_id).data.metrics["acc"] == 1.0


def test_metrics_buffer_flushes_when_the_window_passes(settings: Settings) -> None:
    with tracking.stage_run(settings, "exp", "train") as run_id:
        buffer = tracking.MetricsBuffer(run_id, window_seconds=0.0)
        buffer.add({"loss": 0.5}, 1)
        assert len(MlflowClient().get_metric_history(run_id, "loss")) == 1


def test_runs_carry_source_and_user_context(settings: Settings) -> None:
    with tracking.stage_run(settings, "exp", "ingest") as run_id:
        pass
    tags = MlflowClient().get_run(run_id).data.tags
    assert tags["mlflow.user"] == getpass.getuser()
    assert tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.runName"] == "ingest"
    assert "mlflow.source.git.commit" not in tags  # the project folder is not a git repo
