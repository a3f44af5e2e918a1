"""Settings: where the stores live, from MLOPS_* variables, always absolute."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mlops.settings import Settings, find_project_root, redact


@pytest.fixture
def root(tmp_path: Path) -> Path:
    project = (tmp_path / "proj").resolve()
    (project / ".dvc").mkdir(parents=True)
    return project


def _sqlite_path(url: str) -> Path:
    assert url.startswith("sqlite:////"), url
    return Path(url.removeprefix("sqlite:///"))


def test_defaults_live_under_dot_mlops(root: Path) -> None:
    s = Settings.from_env(env={}, cwd=root)
    assert s.root == root
    assert s.home == root / ".mlops"
    assert s.home.is_absolute()
    assert _sqlite_path(s.tracking_uri) == root / ".mlops" / "mlflow.db"
    assert _sqlite_path(s.optuna_storage) == root / ".mlops" / "optuna.db"
    assert _sqlite_path(s.database_url) == root / ".mlops" / "mlops.db"
    assert s.artifact_root == (root / ".mlops" / "artifacts").as_uri()
    assert s.artifact_root.startswith("file:///")
    assert s.embedded is True


def test_from_env_creates_nothing(root: Path) -> None:
    Settings.from_env(env={}, cwd=root)
    assert sorted(p.name for p in root.iterdir()) == [".dvc"]


def test_subdirectory_finds_the_root(root: Path) -> None:
    sub = root / "a" / "b"
    sub.mkdir(parents=True)
    assert Settings.from_env(env={}, cwd=sub).root == root


def test_no_dvc_folder_falls_back_to_cwd(tmp_path: Path) -> None:
    bare = (tmp_path / "bare").resolve()
    bare.mkdir()
    # tmp_path's ancestors hold no .dvc folder on a sane machine
    assert not any((p / ".dvc").is_dir() for p in bare.parents)
    assert find_project_root(bare, env={}) == bare


def test_dvc_root_wins_over_cwd(root: Path, tmp_path: Path) -> None:
    other = (tmp_path / "other").resolve()
    other.mkdir()
    s = Settings.from_env(env={"DVC_ROOT": str(other)}, cwd=root)
    assert s.root == other
    assert s.home == other / ".mlops"
    assert _sqlite_path(s.tracking_uri) == other / ".mlops" / "mlflow.db"


def test_empty_dvc_root_is_ignored(root: Path) -> None:
    assert Settings.from_env(env={"DVC_ROOT": ""}, cwd=root).root == root


def test_dvc_temp_experiment_copy_resolves_to_parent_repo(root: Path) -> None:
    exp = root / ".dvc" / "tmp" / "exps" / "xyz"
    (exp / ".dvc").mkdir(parents=True)  # the copy is a repo of its own
    (exp / "sub").mkdir()
    assert Settings.from_env(env={}, cwd=exp).root == root
    assert Settings.from_env(env={}, cwd=exp / "sub").root == root
    assert Settings.from_env(env={}, cwd=exp).home == root / ".mlops"


def test_relative_values_are_taken_from_the_root(root: Path) -> None:
    sub = root / "deep" / "er"
    sub.mkdir(parents=True)
    env = {
        "MLOPS_TRACKING_URI": "sqlite:///rel/mlflow.db",
        "MLOPS_ARTIFACT_ROOT": "arts",
        "MLOPS_OPTUNA_STORAGE": "stores/optuna.db",
        "MLOPS_DATABASE_URL": "sqlite:///db/x.db",
    }
    s = Settings.from_env(env=env, cwd=sub)
    assert _sqlite_path(s.tracking_uri) == root / "rel" / "mlflow.db"
    assert s.artifact_root == (root / "arts").as_uri()
    assert _sqlite_path(s.optuna_storage) == root / "stores" / "optuna.db"
    assert _sqlite_path(s.database_url) == root / "db" / "x.db"


def test_relative_home_is_taken_from_the_root(root: Path) -> None:
    s = Settings.from_env(env={"MLOPS_HOME": "state"}, cwd=root)
    assert s.home == root / "state"
    assert _sqlite_path(s.tracking_uri) == root / "state" / "mlflow.db"
    assert s.artifact_root == (root / "state" / "artifacts").as_uri()


def test_absolute_values_pass_through(root: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    env = {
        "MLOPS_TRACKING_URI": f"sqlite:///{elsewhere}/m.db",
        "MLOPS_ARTIFACT_ROOT": f"file://{elsewhere}/arts",
        "MLOPS_DATABASE_URL": "sqlite:///:memory:",
    }
    s = Settings.from_env(env=env, cwd=root)
    assert s.tracking_uri == f"sqlite:///{elsewhere}/m.db"
    assert s.artifact_root == (elsewhere / "arts").as_uri()
    assert s.database_url == "sqlite:///:memory:"


def test_surrounding_whitespace_is_stripped(root: Path) -> None:
    s = Settings.from_env(env={"MLOPS_TRACKING_URI": "  sqlite:///x.db \n"}, cwd=root)
    assert _sqlite_path(s.tracking_uri) == root / "x.db"


def test_server_urls_pass_through_unchanged(root: Path) -> None:
    env = {
        "MLOPS_TRACKING_URI": "http://mlflow.internal:5000",
        "MLOPS_ARTIFACT_ROOT": "s3://bucket/artifacts",
        "MLOPS_OPTUNA_STORAGE": "postgresql://optuna:pw@db:5432/optuna",
        "MLOPS_DATABASE_URL": "postgresql+psycopg://mlops:secret@db:5432/mlops",
    }
    s = Settings.from_env(env=env, cwd=root)
    assert s.tracking_uri == env["MLOPS_TRACKING_URI"]
    assert s.artifact_root == env["MLOPS_ARTIFACT_ROOT"]
    assert s.optuna_storage == env["MLOPS_OPTUNA_STORAGE"]
    assert s.database_url == env["MLOPS_DATABASE_URL"]
    assert s.embedded is False


def test_settings_are_frozen(root: Path) -> None:
    s = Settings.from_env(env={}, cwd=root)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.tracking_uri = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://user:secret@db:5432/mlops", "postgresql://user:***@db:5432/mlops"),
        ("postgresql+psycopg://u:p%40ss@h/d", "postgresql+psycopg://u:***@h/d"),
        ("http://alice:tok:en@mlflow:5000/", "http://alice:***@mlflow:5000/"),
        ("postgresql://user@db/mlops", "postgresql://user@db/mlops"),
        ("sqlite:////tmp/x/mlflow.db", "sqlite:////tmp/x/mlflow.db"),
        ("http://mlflow:5000", "http://mlflow:5000"),
    ],
)
def test_redact(url: str, expected: str) -> None:
    assert redact(url) == expected


def test_as_dict_redacts_every_url(root: Path) -> None:
    env = {
        "MLOPS_TRACKING_URI": "http://bob:hunter2@mlflow:5000",
        "MLOPS_ARTIFACT_ROOT": "s3://key:s3cret@bucket/arts",
        "MLOPS_OPTUNA_STORAGE": "postgresql://optuna:pw123@db/optuna",
        "MLOPS_DATABASE_URL": "postgresql+psycopg://mlops:topsecret@db/mlops",
    }
    shown = Settings.from_env(env=env, cwd=root).as_dict()
    text = repr(shown)
    for secret in ("hunter2", "s3cret", "pw123", "topsecret"):
        assert secret not in text
    assert shown["tracking_uri"] == "http://bob:***@mlflow:5000"
    assert shown["database_url"] == "postgresql+psycopg://mlops:***@db/mlops"
    assert shown["root"] == str(root)
    assert set(shown) == {
        "root",
        "home",
        "tracking_uri",
        "artifact_root",
        "optuna_storage",
        "database_url",
    }


def test_redact_password_without_user() -> None:
    assert "secret" not in redact("redis://:secret@cache:6379/0")


def test_redact_password_with_slash() -> None:
    assert "p/ss" not in redact("postgresql://user:p/ss@db/mlops")
