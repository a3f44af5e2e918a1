"""`mlops sweep …` as a user runs it, on the embedded stores of a sweep project: parallel
workers search distinct configurations with `train.threads` threads and report every
trial in logs; `sweep worker` adds N new trials under an MLflow run of its own, with a
seed its id reproduces; `sweep apply` writes the best trial into params.yaml; the
dashboard stops its child on SIGTERM; the tune stage reports each trial and writes the
same metric keys tuned or not; `schedule add` defaults to params.yaml's pipeline."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import psutil
import pytest
import yaml
from optuna.distributions import FloatDistribution

from mlops import tracking
from mlops.exposure import free_port
from mlops.tuning.objective import RUN_ATTR, TAG_STUDY, TAG_THREADS, study_name
from mlops.tuning.storage import worker_seed
from tests.integration import sweep_project as sp

WAIT_S = 300.0  # a hang fails the test instead of blocking the run
SWEEP_TRIALS = 10


def _cli(root: Path, *args: str, timeout: float = WAIT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from mlops.cli import main; main()", *args],
        cwd=root, env=sp.clean_env(), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def _ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr, done.stderr[-3000:]
    return done


def _one_line(done: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    assert done.returncode == code, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: "), lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sweep project, trials of 20 epochs (long enough that both workers get some)."""
    root = tmp_path_factory.mktemp("sweep-cli-template")
    sp.write_project(root, sp.params_yaml(epochs=20))
    return root


@pytest.fixture(scope="module")
def swept(template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`mlops sweep run --trials 10 --workers 2` (no pipeline name: params.yaml's)."""
    root = tmp_path_factory.mktemp("swept") / "project"
    shutil.copytree(template, root)
    done = _ok(_cli(root, "sweep", "run", "--trials", str(SWEEP_TRIALS), "--workers", "2"))
    return {"root": root, "done": done, "study": sp.open_study(root)}


def _trial_runs(root: Path, study: Any) -> dict[int, Any]:
    runs = {r.info.run_id: r for r in sp.runs(root)}
    return {
        t.number: runs[t.user_attrs[RUN_ATTR]] for t in sp.trials(study, ("COMPLETE", "PRUNED"))
    }


# --- sweep run ---------------------------------------------------------------------


def test_parallel_workers_sample_distinct_configurations(swept: dict[str, Any]) -> None:
    """Two workers of one sweep each ran trials, and no two trials share their params
    (with one sampler seed for both, trial k of one worker repeated trial k of the other)."""
    study, root = swept["study"], swept["root"]
    trials = sp.trials(study, ("COMPLETE", "PRUNED"))
    assert SWEEP_TRIALS <= len(trials) <= SWEEP_TRIALS + 1
    by_run = _trial_runs(root, study)
    pids = {r.data.tags[tracking.TAG_PID] for r in by_run.values()}
    assert len(pids) == 2, f"one worker ran every trial: {pids}"
    configs = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(configs)) == len(configs), [(t.number, t.params) for t in trials]
    parent = next(r for r in sp.runs(root) if r.data.tags.get(tracking.TAG_STAGE) == "sweep")
    seeds = json.loads(parent.data.params["sweep.seeds"])
    assert seeds == [worker_seed(0, "0", 0), worker_seed(0, "1", 0)]
    assert seeds[0] == 0 and seeds[1] != 0  # worker 0 of a new study: tune.seed itself


def test_workers_train_with_train_threads(swept: dict[str, Any]) -> None:
    """One worker per core would still train with train.threads (1 here), not every core."""
    runs = _trial_runs(swept["root"], swept["study"])
    assert {r.data.tags.get(TAG_THREADS) for r in runs.values()} == {"1"}
    parent = [r for r in sp.runs(swept["root"]) if r.data.tags.get(tracking.TAG_STAGE) == "sweep"]
    assert parent[0].data.params["sweep.threads"] == "1"


def test_progress_is_one_plain_line_per_trial_in_logs(swept: dict[str, Any]) -> None:
    """stderr is a pipe here: one line per finished trial, no progress bar."""
    err = swept["done"].stderr
    lines = [line for line in err.splitlines() if line.startswith("sweep: trial ")]
    numbers = sorted(int(line.split()[2]) for line in lines)
    finished = [t.number for t in sp.trials(swept["study"], ("COMPLETE", "PRUNED", "FAIL"))]
    assert numbers == finished, err[-3000:]
    assert all("; best " in line and line.endswith(f"/{SWEEP_TRIALS}") for line in lines), lines
    assert "━" not in err  # no bar drawn into a log
    assert "mlops sweep apply" in swept["done"].stdout


def test_the_study_names_its_metric(swept: dict[str, Any]) -> None:
    """optuna-dashboard shows the metric's name instead of "Objective 0"."""
    assert swept["study"].metric_names == ["val_accuracy"]


def test_another_pipeline_name_is_refused(template: Path) -> None:
    _one_line(_cli(template, "sweep", "run", "nosuch", "--trials", "1"), 2, "'nosuch'", "digits")


# --- sweep worker ------------------------------------------------------------------


def test_worker_adds_new_trials_nested_under_its_own_run(template: Path, tmp_path: Path) -> None:
    """`--trials 2` means 2 new trials (as in `sweep run`), not a study total of 2; the
    trials are children of the worker's own MLflow run; one line per trial in its log;
    `--worker ID` gives a seed that the same ID and study state reproduce."""
    root = tmp_path / "project"
    shutil.copytree(template, root)
    study = sp.open_study(root)
    name = study.study_name
    _ok(_cli(root, "sweep", "worker", name, "--total", "2", "--worker", "a"))
    assert sp.finished(study) == 2
    done = _ok(_cli(root, "sweep", "worker", name, "--trials", "2", "--worker", "b"))
    assert sp.finished(study) == 4, "--trials 2 must add 2 trials to a study that has 2"
    lines = [line for line in done.stderr.splitlines() if line.startswith("worker: trial ")]
    assert len(lines) == 2, done.stderr[-3000:]
    assert f"sampler seed {worker_seed(0, 'b', 2)} (worker b)" in done.stderr

    runs = sp.runs(root)
    workers = {
        r.info.run_id: r for r in runs if r.data.tags.get(tracking.TAG_STAGE) == "sweep worker"
    }
    assert len(workers) == 2
    assert {r.info.status for r in workers.values()} == {"FINISHED"}
    assert {r.data.tags["mlops.worker"] for r in workers.values()} == {"a", "b"}
    assert {r.data.tags[TAG_STUDY] for r in workers.values()} == {name}
    for number, run in _trial_runs(root, study).items():
        parent = run.data.tags.get("mlflow.parentRunId")
        assert parent in workers, f"trial {number}: a loose top-level run ({parent})"
    b = next(r for r in workers.values() if r.data.tags["mlops.worker"] == "b")
    assert b.data.tags["mlops.sampler_seed"] == str(worker_seed(0, "b", 2))
    assert b.data.metrics["trials_run"] == 2


def test_worker_refuses_trials_and_total_together(template: Path) -> None:
    study = study_name(sp.params(template))
    done = _cli(template, "sweep", "worker", study, "--trials", "2", "--total", "4")
    _one_line(done, 2, "--trials", "--total")


def test_worker_refuses_an_id_and_a_seed_together(template: Path) -> None:
    study = study_name(sp.params(template))
    done = _cli(template, "sweep", "worker", study, "--worker", "a", "--seed", "7")
    _one_line(done, 2, "--worker", "--seed")


def test_worker_joins_under_a_run_of_the_pipeline_only(swept: dict[str, Any]) -> None:
    """`--parent` names the sweep's run: a made-up id, hostile text or an empty string is
    one line, before any trial."""
    root, study = swept["root"], swept["study"]
    before = sp.finished(study)
    for parent, words in [
        ("deadbeef", ("--parent", "not an MLflow run id")),
        ("x' or '1'='1", ("--parent", "not an MLflow run id")),
        ("", ("--parent", "not an MLflow run id")),
        ("0123456789abcdef" * 2, ("--parent", "no such run")),
    ]:
        done = _cli(root, "sweep", "worker", study.study_name, "--trials", "1", "--parent", parent)
        _one_line(done, 2, *words)
    assert sp.finished(study) == before


def test_worker_refuses_a_study_made_from_other_params(
    swept: dict[str, Any], tmp_path: Path
) -> None:
    """A stale params.yaml (other epochs) never adds its trials to the shared study."""
    root = tmp_path / "project"
    shutil.copytree(swept["root"], root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["tune"]["epochs"] = params["tune"]["epochs"] + 1
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    study = swept["study"]
    before = sp.finished(study)
    done = _cli(root, "sweep", "worker", study.study_name, "--trials", "1")
    _one_line(done, 2, study.study_name, "params.yaml makes study")
    assert sp.finished(sp.open_study(swept["root"])) == before


def test_a_sweep_without_splits_is_one_line_and_makes_nothing(
    template: Path, tmp_path: Path
) -> None:
    root = tmp_path / "project"
    shutil.copytree(template, root)
    shutil.rmtree(root / "data" / "split")
    done = _cli(root, "sweep", "run", "--trials", "1", "--workers", "2")
    _one_line(done, 2, "dvc repro split")
    assert sp.runs(root) == []  # no sweep run left FAILED


def test_a_worker_without_splits_is_one_line_and_makes_nothing(
    swept: dict[str, Any], tmp_path: Path
) -> None:
    root = tmp_path / "project"
    shutil.copytree(swept["root"], root)
    shutil.rmtree(root / "data" / "split")
    before = len(sp.runs(root))
    done = _cli(root, "sweep", "worker", swept["study"].study_name, "--trials", "1")
    _one_line(done, 2, "dvc repro split")
    assert len(sp.runs(root)) == before  # no worker run left FAILED


# --- sweep apply -------------------------------------------------------------------


def test_apply_writes_the_best_trial_into_params_yaml(
    swept: dict[str, Any], tmp_path: Path
) -> None:
    """`--dry-run` shows the diff and writes nothing; then the best trial's values replace
    the train section's, a comment names study and trial, every other line is kept, and
    params.yaml still names the same study (so `sweep status` and `sweep run` go on with
    it)."""
    root = tmp_path / "project"
    shutil.copytree(swept["root"], root)
    study, best = swept["study"], swept["study"].best_trial
    before = (root / "params.yaml").read_text()

    dry = _ok(_cli(root, "sweep", "apply", "--dry-run"))
    assert (root / "params.yaml").read_text() == before
    assert "+++ b/params.yaml" in dry.stdout and "dry run, nothing written" in dry.stdout

    done = json.loads(_ok(_cli(root, "sweep", "apply", "--json")).stdout)
    assert done["study"] == study.study_name and done["trial"] == best.number
    assert done["written"] is True and done["study_of_params"] == study.study_name
    assert {c["param"] for c in done["changes"]} == set(best.params)

    after = (root / "params.yaml").read_text()
    data = yaml.safe_load(after)
    assert data["train"]["learning_rate"] == best.params["learning_rate"]
    assert data["train"]["model"]["mlp"]["dropout"] == best.params["model.mlp.dropout"]
    mark = f"# mlops sweep apply: study {study.study_name}, trial {best.number} (val_accuracy "
    removed = [line for line in before.splitlines() if line not in after.splitlines()]
    added = [line for line in after.splitlines() if line not in before.splitlines()]
    assert removed == ["    mlp: {hidden_sizes: [16], dropout: 0.1}"], removed
    assert [line for line in added if line.startswith(mark)], added
    assert len(added) == 3, added  # the comment, the dropout line, learning_rate (new key)
    assert study_name(sp.params(root)) == study.study_name

    again = _ok(_cli(root, "sweep", "apply"))
    assert "already holds its values; nothing to write" in again.stdout
    assert (root / "params.yaml").read_text() == after


def test_apply_refuses_with_one_line(swept: dict[str, Any], tmp_path: Path) -> None:
    root = tmp_path / "project"
    shutil.copytree(swept["root"], root)
    before = (root / "params.yaml").read_text()
    _one_line(_cli(root, "sweep", "apply", "nosuch"), 2, "'nosuch'", "not found")
    sp.open_study(root).study_name  # noqa: B018 - the study exists
    empty = _empty_study(root, "empty-study")
    _one_line(_cli(root, "sweep", "apply", empty), 2, empty, "no complete trial")
    other = _study_with_trial(root, "other-study", {"nosuch.param": 1.0})
    _one_line(_cli(root, "sweep", "apply", other), 2, "'nosuch.param'", "train section")
    assert (root / "params.yaml").read_text() == before


def _empty_study(root: Path, name: str) -> str:
    optuna.create_study(study_name=name, storage=sp.settings(root).optuna_storage)
    return name


def _study_with_trial(root: Path, name: str, params: dict[str, float]) -> str:
    study = optuna.create_study(study_name=name, storage=sp.settings(root).optuna_storage)
    study.add_trial(
        optuna.trial.create_trial(
            params=params,
            distributions={k: FloatDistribution(0.0, 2.0) for k in params},
            value=0.5,
        )
    )
    return name


# --- dashboard ---------------------------------------------------------------------


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_dashboard_stops_its_child_on_sigterm(template: Path, tmp_path: Path, host: str) -> None:
    """...and says so in one warning line when it listens beyond this machine."""
    root = tmp_path / "project"
    shutil.copytree(template, root)
    sp.open_study(root)  # the storage exists
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", "from mlops.cli import main; main()", "sweep", "dashboard",
         "--host", host, "--port", str(port)],
        cwd=root, env=sp.clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    children: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 120
        while not _listening(port):
            assert proc.poll() is None, proc.communicate()[0].decode()[-3000:]
            assert time.monotonic() < deadline, "the dashboard never listened"
            time.sleep(0.2)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        _gone, alive = psutil.wait_procs(children, timeout=5)
        out = proc.stdout.read().decode() if proc.stdout and not alive else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for child in children:
            if child.is_running():
                child.kill()
    assert not alive, f"optuna-dashboard left running: {alive}"
    assert not _listening(port), "the port is still held"
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # free again
    assert proc.returncode == 0, out[-3000:]
    assert "dashboard stopped" in out
    warned = [line for line in out.splitlines() if line.startswith("warning:")]
    if host == "0.0.0.0":
        assert len(warned) == 1 and "no authentication" in warned[0], out
        assert "read and delete every study" in warned[0]
    else:
        assert warned == [], out


# --- the tune stage ----------------------------------------------------------------


def _tune(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.tune"], cwd=root, env=sp.clean_env(),
        capture_output=True, text=True, timeout=WAIT_S,
    )  # fmt: skip


def test_tune_stage_reports_each_trial_and_keeps_its_metric_keys(
    template: Path, tmp_path: Path
) -> None:
    root = tmp_path / "project"
    shutil.copytree(template, root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["tune"]["n_trials"] = 0
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    _ok(_tune(root))
    untuned = json.loads((root / "reports" / "tune.json").read_text())

    params["tune"]["n_trials"] = 3
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    done = _ok(_tune(root))
    tuned = json.loads((root / "reports" / "tune.json").read_text())
    assert set(untuned) == set(tuned), (untuned, tuned)  # `dvc metrics diff` pairs them up
    assert untuned["best_value"] is None and tuned["best_value"] > 0
    lines = [line for line in done.stdout.splitlines() if line.startswith("tune: trial ")]
    assert [int(line.split()[2]) for line in lines] == [0, 1, 2], done.stdout
    assert all("val_accuracy" in line and line.endswith(" s") for line in lines), lines


# --- schedule add ------------------------------------------------------------------


def test_schedule_add_defaults_to_the_pipeline_of_params_yaml(
    template: Path, tmp_path: Path
) -> None:
    root = tmp_path / "project"
    shutil.copytree(template, root)
    added = _ok(_cli(root, "schedule", "add", "nightly", "--cron", "0 2 * * *", "--json"))
    assert json.loads(added.stdout)["schedule"]["pipeline"] == "digits"
    other = _cli(root, "schedule", "add", "x", "--pipeline", "other", "--cron", "0 2 * * *")
    _one_line(other, 2, "'other'", "'digits'")
    assert os.path.exists(root / ".mlops")
