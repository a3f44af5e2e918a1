"""pipelines._stage.run_stage: params first, then the body; errors become exit codes + one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mlops import workspace
from mlops.errors import DataError, Interrupted, StoreError, UserError
from pipelines._stage import StageContext, run_stage


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / ".dvc").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    for key in ("HOME", "TRACKING_URI", "ARTIFACT_ROOT", "OPTUNA_STORAGE", "DATABASE_URL"):
        monkeypatch.delenv(f"MLOPS_{key}", raising=False)
    return tmp_path.resolve()


def test_body_gets_params_and_settings(workdir: Path) -> None:
    (workdir / "params.yaml").write_text("pipeline:\n  name: flowers\ntrain:\n  epochs: 2\n")
    seen: list[StageContext] = []
    run_stage("train", seen.append)
    assert len(seen) == 1
    ctx = seen[0]
    assert ctx.name == "train"
    assert ctx.experiment == "flowers"
    assert ctx.params.train.epochs == 2
    assert ctx.settings.root == workdir
    assert sorted(p.name for p in workdir.iterdir()) == [".dvc", "params.yaml"]


def test_bad_params_exit_2_before_the_body(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "params.yaml").write_text("train:\n  epochs: 0\n")
    called: list[StageContext] = []
    with pytest.raises(SystemExit) as info:
        run_stage("train", called.append)
    assert info.value.code == 2
    assert called == []
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("train: error: params.yaml: train.epochs = 0")


def test_missing_params_file_exits_2(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        run_stage("ingest", lambda ctx: None)
    assert info.value.code == 2
    assert "params.yaml: file not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (UserError("data.source: file not found: x.csv"), 2),
        (DataError("data unusable"), 1),
        (StoreError("cannot reach the tracking store"), 1),
    ],
)
def test_platform_errors_become_exit_codes(
    workdir: Path, capsys: pytest.CaptureFixture[str], error: Exception, code: int
) -> None:
    (workdir / "params.yaml").write_text("")

    def body(ctx: StageContext) -> None:
        raise error

    with pytest.raises(SystemExit) as info:
        run_stage("split", body)
    assert info.value.code == code
    assert capsys.readouterr().err == f"split: error: {error}\n"


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt(), Interrupted(15)])
def test_interrupts_exit_130(
    workdir: Path, capsys: pytest.CaptureFixture[str], interrupt: BaseException
) -> None:
    (workdir / "params.yaml").write_text("")

    def body(ctx: StageContext) -> None:
        raise interrupt

    with pytest.raises(SystemExit) as info:
        run_stage("train", body)
    assert info.value.code == 130
    assert capsys.readouterr().err == "train: interrupted\n"


def test_other_exceptions_propagate(workdir: Path) -> None:
    (workdir / "params.yaml").write_text("")

    def body(ctx: StageContext) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run_stage("train", body)


def test_stage_paths_are_relative() -> None:
    every = [
        workspace.PARAMS,
        workspace.RAW,
        workspace.SCHEMA,
        workspace.MODEL_DIR,
        *workspace.SPLITS.values(),
    ]
    assert all(not p.is_absolute() for p in every)
    assert set(workspace.SPLITS) == {"train", "val", "test"}


@pytest.mark.parametrize("module", ["ingest", "validate", "split", "train", "evaluate", "register"])
def test_stage_modules_import_nothing_heavy(tmp_path: Path, module: str) -> None:
    code = (
        f"import sys, pipelines.{module} as m\n"
        "assert callable(m.main)\n"
        "print([x for x in ('torch', 'mlflow', 'optuna') if x in sys.modules])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.strip() == "[]"
    assert list(tmp_path.iterdir()) == []
