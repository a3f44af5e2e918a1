"""Lineage facts: params hash, DVC md5, git commit and dirty flag."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from mlops.lineage import (
    EXP_BASELINE_ENV,
    EXP_NAME_ENV,
    data_hashes,
    dvc_md5,
    git_commit,
    git_dirty,
    lineage_tags,
    params_diff,
    params_hash,
)
from mlops.params import Params

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV, "HOME": str(repo.parent)}
    done = subprocess.run(
        ["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q")
    (root / "code.py").write_text("x = 1\n")
    (root / "dvc.lock").write_text("schema: '2.0'\n")
    (root / ".gitignore").write_text("/data\n")
    (root / "sub").mkdir()
    (root / "sub" / ".gitignore").write_text("/out\n")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "first")
    return root


def test_params_hash_is_stable_and_order_independent() -> None:
    a = {"train": {"epochs": 3, "lr": 0.1}, "data": {"source": "x"}}
    b = {"data": {"source": "x"}, "train": {"lr": 0.1, "epochs": 3}}
    assert params_hash(a) == params_hash(b)
    assert params_hash(a) == params_hash(a)
    assert len(params_hash(a)) == 64
    assert int(params_hash(a), 16) >= 0


def test_params_hash_changes_with_any_value() -> None:
    base = Params().as_dict()
    changed = Params.model_validate({"train": {"epochs": 61}}).as_dict()
    assert params_hash(base) != params_hash(changed)
    assert params_hash(base) == params_hash(Params().as_dict())


def test_params_hash_is_sha256_of_canonical_json() -> None:
    assert params_hash({"b": 1, "a": [1, 2]}) == hashlib.sha256(b'{"a":[1,2],"b":1}').hexdigest()


def test_dvc_md5_is_md5_of_bytes(tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000  # over one read chunk
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert dvc_md5(path) == hashlib.md5(data).hexdigest()


def test_data_hashes(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"alpha")
    (tmp_path / "b").write_bytes(b"")
    hashes = data_hashes({"train": tmp_path / "a", "val": tmp_path / "b"})
    assert hashes == {
        "train": hashlib.md5(b"alpha").hexdigest(),
        "val": hashlib.md5(b"").hexdigest(),
    }


def test_git_commit_is_head(repo: Path) -> None:
    head = _git(repo, "rev-parse", "HEAD")
    assert git_commit(repo) == head
    assert len(head) == 40


def test_git_commit_outside_a_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    plain = tmp_path / "plain"
    plain.mkdir()
    assert git_commit(plain) == "unknown"


def test_git_commit_before_first_commit(tmp_path: Path) -> None:
    root = tmp_path / "fresh"
    root.mkdir()
    _git(root, "init", "-q")
    assert git_commit(root) == "unknown"


def test_clean_repo_is_not_dirty(repo: Path) -> None:
    assert git_dirty(repo) is False


def test_modified_file_is_dirty(repo: Path) -> None:
    (repo / "code.py").write_text("x = 2\n")
    assert git_dirty(repo) is True


def test_staged_change_is_dirty(repo: Path) -> None:
    (repo / "code.py").write_text("x = 3\n")
    _git(repo, "add", "code.py")
    assert git_dirty(repo) is True


def test_deleted_file_is_dirty(repo: Path) -> None:
    (repo / "code.py").unlink()
    assert git_dirty(repo) is True


def test_dvc_lock_alone_is_not_dirty(repo: Path) -> None:
    (repo / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    assert git_dirty(repo) is False


def test_gitignore_files_alone_are_not_dirty(repo: Path) -> None:
    (repo / ".gitignore").write_text("/data\n/models\n")
    (repo / "sub" / ".gitignore").write_text("/out\n/more\n")
    assert git_dirty(repo) is False


def test_untracked_file_is_not_dirty(repo: Path) -> None:
    (repo / "new.py").write_text("y = 1\n")
    assert git_dirty(repo) is False


def test_dvc_lock_plus_code_is_dirty(repo: Path) -> None:
    (repo / "dvc.lock").write_text("changed\n")
    (repo / "code.py").write_text("x = 4\n")
    assert git_dirty(repo) is True


def test_outside_a_repo_is_not_dirty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    plain = tmp_path / "plain"
    plain.mkdir()
    assert git_dirty(plain) is False


def test_params_diff_names_dotted_keys_with_their_new_values() -> None:
    before = {"train": {"epochs": 60, "seed": 1, "model": {"mlp": {"sizes": [64]}}}, "a": 1}
    after = {"train": {"epochs": 5, "seed": True, "model": {"mlp": {"sizes": [64, 32]}}}}
    assert params_diff(before, after) == {
        "a": None,  # removed
        "train.epochs": 5,
        "train.model.mlp.sizes": [64, 32],
        "train.seed": True,  # 1 == True in Python, not in params
    }
    assert params_diff(after, after) == {}


def _exp_env(repo: Path, name: str = "lucky-seed") -> dict[str, str]:
    return {EXP_NAME_ENV: name, EXP_BASELINE_ENV: _git(repo, "rev-parse", "HEAD")}


def test_lineage_of_a_dvc_experiment(repo: Path) -> None:
    params = repo / "params.yaml"
    params.write_text("train:\n  epochs: 60  # a comment\n  seed: 42\n")
    _git(repo, "add", "params.yaml")
    _git(repo, "commit", "-q", "-m", "params")
    head = _git(repo, "rev-parse", "HEAD")
    params.write_text("train:\n  epochs: 5\n  seed: 42\n")  # what `dvc exp run -S` does
    tags = lineage_tags(repo, {"x": 1}, params, _exp_env(repo))
    assert (
        tags
        == {
            "mlops.git_commit": head,
            "mlops.git_dirty": "false",  # params.yaml's change is recorded below
            "mlops.params_hash": params_hash({"x": 1}),
            "mlops.dvc_exp.name": "lucky-seed",
            "mlops.dvc_exp.ref": f"refs/exps/{head[:2]}/{head[2:]}/lucky-seed",
            "mlops.dvc_exp.params": '{"train.epochs": 5}',
        }
    )
    (repo / "code.py").write_text("x = 5\n")  # code changed too: the experiment holds it
    assert lineage_tags(repo, {}, params, _exp_env(repo))["mlops.git_dirty"] == "true"


def test_lineage_outside_an_experiment_has_no_experiment_tags(repo: Path) -> None:
    (repo / "params.yaml").write_text("train: {epochs: 5}\n")
    tags = lineage_tags(repo, {}, repo / "params.yaml", env={})
    assert set(tags) == {"mlops.git_commit", "mlops.git_dirty", "mlops.params_hash"}
    assert tags["mlops.git_commit"] == _git(repo, "rev-parse", "HEAD")


def test_experiment_params_against_a_baseline_without_params_yaml(repo: Path) -> None:
    (repo / "params.yaml").write_text("train: {epochs: 5}\n")  # untracked in the baseline
    tags = lineage_tags(repo, {}, repo / "params.yaml", _exp_env(repo))
    assert json.loads(tags["mlops.dvc_exp.params"]) == {"train.epochs": 5}
