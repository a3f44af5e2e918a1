"""`mlops registry …` as a user runs it: separate CLI processes on a real MLflow store.

A gated project (production needs accuracy ≥ 0.9 and to beat its holder) walks three
versions through staging, production, a refusal, a forced override, a rollback and an
archive; `compare` is checked against metrics computed here on the same test split;
bad input, tampered and pickled artifacts and names that try to leave the project are
refused with one line and leave the registry as it was; and the same commands run
against a real `mlflow server` over http.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import pickle
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file
from scipy.stats import binomtest
from sklearn.metrics import f1_score, log_loss

from mlops import exposure, tracking, ui
from mlops.data import Schema, features_and_target, read_parquet
from mlops.errors import UserError
from mlops.io import file_digest
from mlops.models import ModelSpec, build_model
from registry.context import Context
from registry.mlflow_port import STAGE_TAG
from registry.registration import RegisteredVersion
from registry.stages import check_model_name
from tests.integration.registry_project import (
    OPEN_GATES,
    cli,
    context,
    register_small,
    write_project,
)

MODEL = "digits"
GATES_TAG = "mlops.gates.production"

# Production: accuracy ≥ 0.9 and at least as good as the current holder.
GATED = """
registry:
  gates:
    staging: {integrity: true}
    production:
      integrity: true
      signature: true
      thresholds: {accuracy: 0.9}
      beat_holder_by: 0.0
"""
# Only alice may move versions to production.
GUARDED = """
registry:
  gates:
    staging: {integrity: true}
    production: {integrity: true, signature: true}
  permissions:
    production: [alice]
"""


# --- helpers ------------------------------------------------------------------------


def mlops(
    root: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`mlops registry ARGS…` in `root`, as its own process."""
    return cli(root, "registry", *args, env=env)


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """`result`, after checking that the command succeeded."""
    assert result.returncode == 0, f"{result.args[3:]}: exit {result.returncode}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(result).stdout)


def one_line_error(
    result: subprocess.CompletedProcess[str], code: int, progress: bool = False
) -> str:
    """The single `error: …` line a failed command printed, after checking its exit code.
    With `progress`, the command had started work: its progress lines (plain lines on
    stderr when it is not a terminal) may come first; the error is still one line, last."""
    assert result.returncode == code, (
        f"{result.args[3:]}: exit {result.returncode}, expected {code}\n"
        f"stdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-3000:]}"
    )
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    if progress:
        before = lines[:-1]
        assert not [line for line in before if line.startswith(("error", "warning"))], lines
    else:
        assert len(lines) == 1, result.stderr
    assert lines[-1].startswith("error: "), lines[-1]
    return lines[-1]


def client(ctx: Context) -> MlflowClient:
    """A client on this project's tracking store (not the process-wide default)."""
    uri = ctx.settings.tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def aliases(ctx: Context, name: str = MODEL) -> dict[str, int]:
    """MLflow's aliases of `name`: alias → version."""
    found = client(ctx).get_registered_model(name).aliases or {}
    return {alias: int(v) for alias, v in found.items()}


def state(ctx: Context, name: str = MODEL) -> dict[str, Any]:
    """Everything a stage change touches: the store's versions, holders and ledger, and
    MLflow's aliases and version tags."""
    store, mc = ctx.store, client(ctx)
    versions = store.versions(name)
    return {
        "stages": {v.version: v.stage for v in versions},
        "holders": store.holders(name),
        "ledger": [asdict(e) for e in store.history(name)],
        "aliases": aliases(ctx, name),
        "tags": {v.version: mc.get_model_version(name, str(v.version)).tags for v in versions},
    }


def weights_file(ctx: Context, version: int | str, name: str = MODEL) -> Path:
    """The `artifacts/model.safetensors` of a version, inside the artifact store."""
    uri = client(ctx).get_model_version_download_uri(name, str(version))
    assert uri.startswith("file://"), uri
    path = Path(uri.removeprefix("file://")) / "artifacts" / "model.safetensors"
    assert path.is_file(), path
    assert path.is_relative_to(ctx.settings.root / ".mlops" / "artifacts"), path
    return path


class OpenForWriting:
    """Unpickling this creates (truncates) `path`."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (builtins.open, (self.path, "w"))


class Touch:
    """Unpickling this runs `touch path` in a shell."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {shlex.quote(str(self.path))}",))


def tree(top: Path) -> set[str]:
    """Every path under `top`, relative."""
    return {p.relative_to(top).as_posix() for p in top.rglob("*")}


# --- the gated project: three versions through the life cycle ---------------------


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Context, list[RegisteredVersion]]:
    """Versions 1 and 2 (good: ~0.96 test accuracy) and 3 (weak: 5 training steps)."""
    root = tmp_path_factory.mktemp("gated")
    write_project(root, GATED)
    ctx = context(root)
    done = [
        register_small(ctx, MODEL, seed=0),
        register_small(ctx, MODEL, seed=1),
        register_small(ctx, MODEL, seed=2, steps=5),
    ]
    assert [v.version for v in done] == ["1", "2", "3"]
    return ctx, done


@pytest.fixture(scope="module")
def flow(gated: tuple[Context, list[RegisteredVersion]]) -> dict[str, Any]:
    """Run the life cycle once through the CLI; the tests below check what each step did.

    v1 → staging, (dry run v1 → production), v1 → production, v2 → staging,
    v3 → production (refused), v3 --force without --reason (bad input),
    v3 --force --reason (overrides), rollback (v1 again), archive v3.
    """
    ctx, _ = gated
    root = ctx.settings.root
    seen: dict[str, Any] = {}

    ok(mlops(root, "promote", MODEL, "1", "--to", "staging", "--reason", "first"))
    seen["after_staging"] = aliases(ctx)

    before = state(ctx)
    seen["dry_run"] = as_json(mlops(root, "promote", MODEL, "1", "--to", "production",
                                    "--dry-run", "--json"))  # fmt: skip
    seen["dry_run_changed"] = (before, state(ctx))

    seen["to_production"] = ok(mlops(root, "promote", MODEL, "@staging", "--to", "production"))
    seen["after_production"] = aliases(ctx)
    ok(mlops(root, "promote", MODEL, "2", "--to", "staging"))
    seen["after_v2_staging"] = aliases(ctx)

    before = state(ctx)
    seen["refused"] = mlops(root, "promote", MODEL, "3", "--to", "production")
    seen["refused_states"] = (before, state(ctx))
    seen["refused_tag"] = client(ctx).get_model_version(MODEL, "3").tags.get(GATES_TAG)

    before = state(ctx)
    seen["no_reason"] = mlops(root, "promote", MODEL, "3", "--to", "production", "--force")
    seen["no_reason_states"] = (before, state(ctx))

    seen["forced"] = as_json(mlops(root, "promote", MODEL, "3", "--to", "production",
                                   "--force", "--reason", "hotfix", "--json"))  # fmt: skip
    seen["after_forced"] = aliases(ctx)
    seen["rollback"] = as_json(mlops(root, "rollback", MODEL, "--reason", "v3 misbehaves",
                                     "--json"))  # fmt: skip
    seen["after_rollback"] = aliases(ctx)
    seen["archive"] = as_json(mlops(root, "archive", MODEL, "3", "--reason", "retired", "--json"))
    seen["after_archive"] = aliases(ctx)
    return seen


def test_promotions_move_mlflow_aliases(flow: dict[str, Any]) -> None:
    assert flow["after_staging"] == {"staging": 1}
    assert flow["after_production"] == {"production": 1}  # v1 left staging
    assert "digits v1 promoted: staging → production" in flow["to_production"].stdout
    assert flow["after_v2_staging"] == {"production": 1, "staging": 2}


def test_promote_and_compare_show_their_progress(
    gated: tuple[Context, list[RegisteredVersion]], flow: dict[str, Any]
) -> None:
    """Plain lines on stderr when it is not a terminal (here: a pipe), one per step."""
    steps = flow["to_production"].stderr.splitlines()
    assert [line.split(" (")[0] for line in steps] == [
        "reading the test split",
        "downloading v1",
        "verifying and evaluating v1",
        "evaluating the gates of production",
        "moving v1 to production in MLflow",
    ], steps
    assert all(line.endswith(" s)") for line in steps[1:]), steps
    compared = ok(mlops(gated[0].settings.root, "compare", MODEL, "1", "2", "--json"))
    assert json.loads(compared.stdout)["model"] == MODEL  # stdout stays pure JSON
    lines = [line.split(" (")[0] for line in compared.stderr.splitlines()]
    assert lines == [
        "reading the test split",
        "downloading v1",
        "verifying and evaluating v1",
        "downloading v2",
        "verifying and evaluating v2",
        "testing the significance of the differences",
    ], compared.stderr


def test_sync_json(gated: tuple[Context, list[RegisteredVersion]], flow: dict[str, Any]) -> None:
    ctx, _ = gated
    before = state(ctx)
    synced = as_json(mlops(ctx.settings.root, "sync", MODEL, "--json"))
    holders = {"production": 1, "staging": 2}
    assert synced == {"model": MODEL, "added": 0, "refused": [], "holders": holders}
    assert state(ctx) == before


def test_dry_run_evaluates_gates_and_changes_nothing(flow: dict[str, Any]) -> None:
    outcome = flow["dry_run"]
    assert outcome["dry_run"] is True
    assert (outcome["version"], outcome["from_stage"], outcome["to_stage"]) == (
        1,
        "staging",
        "production",
    )
    assert outcome["passed"] is True
    gates = {g["gate"]: g for g in outcome["gates"]}
    assert set(gates) == {"artifact integrity", "metric accuracy", "beats holder on accuracy"}
    assert all(g["passed"] for g in gates.values())
    assert float(gates["metric accuracy"]["value"]) >= 0.9
    before, after = flow["dry_run_changed"]
    assert before == after


def test_weak_version_is_refused_by_the_threshold_gate(
    gated: tuple[Context, list[RegisteredVersion]], flow: dict[str, Any]
) -> None:
    line = one_line_error(flow["refused"], 1, progress=True)
    assert "version 3" in line
    assert "production" in line
    assert "refused by gate 'metric accuracy'" in line
    assert "≥ 0.9" in line

    before, after = flow["refused_states"]
    for key in ("stages", "holders", "aliases"):
        assert before[key] == after[key], key
    assert after["aliases"] == {"production": 1, "staging": 2}
    assert after["ledger"][:-1] == before["ledger"]
    entry = after["ledger"][-1]
    assert (entry["action"], entry["version"], entry["to_stage"], entry["outcome"]) == (
        "promote",
        3,
        "production",
        "refused",
    )
    assert entry["forced"] is False
    gates = {g["gate"]: g for g in entry["evidence"]["gates"]}
    assert entry["evidence"]["passed"] is False
    assert gates["artifact integrity"]["passed"] is True
    assert gates["metric accuracy"]["passed"] is False
    assert float(gates["metric accuracy"]["value"]) < 0.9
    assert gates["beats holder on accuracy"]["passed"] is False
    assert "vs v1" in gates["beats holder on accuracy"]["value"]

    # The same evidence is on the version in MLflow.
    assert flow["refused_tag"] is not None
    assert json.loads(flow["refused_tag"]) == entry["evidence"]
    # Only the gate tag changed on v3.
    changed = {
        k
        for k in after["tags"][3].keys() | before["tags"][3].keys()
        if after["tags"][3].get(k) != before["tags"][3].get(k)
    }
    assert changed == {GATES_TAG}
    assert after["tags"][3][STAGE_TAG] == "none"


def test_force_needs_a_reason(flow: dict[str, Any]) -> None:
    assert "--reason" in one_line_error(flow["no_reason"], 2)
    before, after = flow["no_reason_states"]
    assert before == after


def test_forced_override_is_recorded(
    gated: tuple[Context, list[RegisteredVersion]], flow: dict[str, Any]
) -> None:
    ctx, _ = gated
    outcome = flow["forced"]
    assert (outcome["version"], outcome["to_stage"], outcome["displaced"]) == (3, "production", 1)
    assert outcome["forced"] is True
    assert outcome["passed"] is False
    assert flow["after_forced"] == {"production": 3, "staging": 2}
    entries = [e for e in ctx.store.history(MODEL) if e.forced]
    assert len(entries) == 1
    entry = entries[0]
    assert (entry.action, entry.version, entry.to_stage, entry.outcome) == (
        "promote",
        3,
        "production",
        "done",
    )
    assert entry.reason == "hotfix"
    assert entry.evidence["passed"] is False
    assert entry.evidence["displaced"] == 1
    failed = {g["gate"] for g in entry.evidence["gates"] if not g["passed"]}
    assert failed == {"metric accuracy", "beats holder on accuracy"}


def test_rollback_returns_production_to_the_previous_holder(flow: dict[str, Any]) -> None:
    outcome = flow["rollback"]
    assert (outcome["action"], outcome["version"], outcome["to_stage"]) == (
        "rollback",
        1,
        "production",
    )
    assert outcome["displaced"] == 3
    assert outcome["passed"] is True
    # A rollback does not ask the old holder to beat the version it replaces.
    assert "beats holder on accuracy" not in {g["gate"] for g in outcome["gates"]}
    assert flow["after_rollback"] == {"production": 1, "staging": 2}


def test_archive_takes_a_version_out_of_every_stage(
    gated: tuple[Context, list[RegisteredVersion]], flow: dict[str, Any]
) -> None:
    ctx, _ = gated
    outcome = flow["archive"]
    assert (outcome["action"], outcome["version"], outcome["to_stage"]) == (
        "archive",
        3,
        "archived",
    )
    assert flow["after_archive"] == {"production": 1, "staging": 2}
    assert client(ctx).get_model_version(MODEL, "3").tags[STAGE_TAG] == "archived"
    assert ctx.store.version(MODEL, 3).stage == "archived"  # type: ignore[union-attr]


def test_history_lists_every_action_in_order(
    gated: tuple[Context, list[RegisteredVersion]], flow: dict[str, Any]
) -> None:
    ctx, _ = gated
    entries = as_json(mlops(ctx.settings.root, "history", MODEL, "--json"))
    summary = [
        (e["action"], e["version"], e["from_stage"], e["to_stage"], e["outcome"], e["forced"])
        for e in entries
    ]
    assert summary == [
        ("register", 1, "none", "none", "done", False),
        ("register", 2, "none", "none", "done", False),
        ("register", 3, "none", "none", "done", False),
        ("promote", 1, "none", "staging", "done", False),
        ("promote", 1, "staging", "production", "done", False),
        ("promote", 2, "none", "staging", "done", False),
        ("promote", 3, "none", "production", "refused", False),
        ("promote", 3, "none", "production", "done", True),
        ("rollback", 1, "none", "production", "done", False),
        ("archive", 3, "none", "archived", "done", False),
    ]
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids)
    times = [e["at"] for e in entries]
    assert times == sorted(times)
    assert [e["reason"] for e in entries][3:] == [
        "first",
        "",
        "",
        "",
        "hotfix",
        "v3 misbehaves",
        "retired",
    ]
    assert {e["actor"] for e in entries} == {ctx.actor}
    limited = as_json(mlops(ctx.settings.root, "history", MODEL, "--limit", "2", "--json"))
    assert limited == entries[-2:]


def test_show_production(
    gated: tuple[Context, list[RegisteredVersion]], flow: dict[str, Any]
) -> None:
    ctx, versions = gated
    info = as_json(mlops(ctx.settings.root, "show", MODEL, "@production", "--json"))
    assert (info["name"], info["version"], info["stage"]) == (MODEL, 1, "production")
    assert info["sha256"] == versions[0].sha256
    assert info["run_id"] == versions[0].run_id
    assert info["source"] == versions[0].source
    assert len(info["artifact_sha256"]) == 64
    assert info["holders"] == {"production": 1, "staging": 2}
    assert info["lineage"]["git_commit"] == "commit0"


def test_lineage(gated: tuple[Context, list[RegisteredVersion]], flow: dict[str, Any]) -> None:
    ctx, versions = gated
    chain = as_json(mlops(ctx.settings.root, "lineage", MODEL, "@staging", "--json"))
    assert chain["git_commit"] == "commit1"
    assert chain["register_run_id"] == versions[1].run_id
    assert chain["optuna_trial"] == "not tuned"
    assert set(chain) == {
        "git_commit",
        "git_dirty",
        "data_md5",
        "params_hash",
        "family",
        "train_run_id",
        "register_run_id",
        "optuna_study",
        "optuna_trial",
    }
    text = ok(mlops(ctx.settings.root, "lineage", MODEL, "2")).stdout
    assert "commit1" in text
    assert versions[1].run_id in text


def test_list_shows_the_aliases_mlflow_has(
    gated: tuple[Context, list[RegisteredVersion]], flow: dict[str, Any]
) -> None:
    ctx, _ = gated
    rows = as_json(mlops(ctx.settings.root, "list", "--json"))
    assert [(r["name"], r["version"]) for r in rows] == [(MODEL, 3), (MODEL, 2), (MODEL, 1)]
    mlflow_aliases = aliases(ctx)
    assert mlflow_aliases == {"production": 1, "staging": 2}
    for row in rows:
        expected = sorted(a for a, v in mlflow_aliases.items() if v == row["version"])
        assert row["aliases"] == expected, row
    assert {r["version"]: r["stage"] for r in rows} == {
        1: "production",
        2: "staging",
        3: "archived",
    }
    assert {r["version"]: r["git_commit"] for r in rows} == {
        1: "commit0",
        2: "commit1",
        3: "commit2",
    }
    # The tags MLflow holds agree with the stages listed.
    mc = client(ctx)
    assert {r["version"]: mc.get_model_version(MODEL, str(r["version"])).tags[STAGE_TAG]
            for r in rows} == {r["version"]: r["stage"] for r in rows}  # fmt: skip


# --- compare --------------------------------------------------------------------------


def _own_scores(ctx: Context, version: int) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities of a version on the test split, computed here from its
    safetensors weights, and the true labels."""

    root = ctx.settings.root
    schema = Schema.load(root / "data" / "raw" / "schema.json")
    x, y = features_and_target(read_parquet(root / "data" / "split" / "test.parquet"), schema)
    weights = weights_file(ctx, version)
    spec = ModelSpec(**json.loads((weights.parent / "model.json").read_text()))
    model = build_model(spec)
    model.load_state_dict(load_file(str(weights)))
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(np.asarray(x, dtype=np.float32)))
    return torch.softmax(logits, dim=1).numpy(), np.asarray(y)


def _expected_metrics(proba: np.ndarray, y: np.ndarray) -> dict[str, float]:
    pred = proba.argmax(axis=1)
    return {
        "accuracy": float((pred == y).mean()),
        "f1_macro": float(f1_score(y, pred, average="macro", labels=list(range(10)))),
        "log_loss": float(log_loss(y, np.clip(proba, 1e-12, 1.0), labels=list(range(10)))),
        "n_samples": float(len(y)),
    }


def test_compare_reevaluates_on_the_test_split(
    gated: tuple[Context, list[RegisteredVersion]], flow: dict[str, Any]
) -> None:
    ctx, versions = gated
    root = ctx.settings.root
    result = as_json(mlops(root, "compare", MODEL, "1", "2", "--json"))

    p1, y = _own_scores(ctx, 1)
    p2, _ = _own_scores(ctx, 2)
    assert result["model"] == MODEL
    assert result["primary_metric"] == "accuracy"
    assert result["n_test_rows"] == len(y) == 270
    test_file = root / "data" / "split" / "test.parquet"
    assert result["test_split_md5"] == file_digest(test_file, "md5")
    cols = {c["version"]: c for c in result["versions"]}
    assert list(cols) == [1, 2]
    for version, proba in ((1, p1), (2, p2)):
        col, expected = cols[version], _expected_metrics(proba, y)
        assert col["now"]["accuracy"] == expected["accuracy"]
        assert col["now"]["n_samples"] == expected["n_samples"]
        assert col["now"]["f1_macro"] == pytest.approx(expected["f1_macro"], abs=1e-12)
        assert col["now"]["log_loss"] == pytest.approx(expected["log_loss"], rel=1e-5)
        assert col["sha256"] == versions[version - 1].sha256
        assert col["family"] == "mlp"
        assert col["parameters"] == 64 * 32 + 32 + 32 * 10 + 10
        assert col["latency_ms"] > 0
    assert (cols[1]["stage"], cols[2]["stage"]) == ("production", "staging")
    assert (cols[1]["git_commit"], cols[2]["git_commit"]) == ("commit0", "commit1")

    [test] = result["tests"]
    right1, right2 = p1.argmax(axis=1) == y, p2.argmax(axis=1) == y
    delta = float(right2.mean() - right1.mean())
    assert (test["baseline"], test["candidate"], test["metric"]) == (1, 2, "accuracy")
    assert test["delta"] == pytest.approx(delta, abs=1e-12)
    assert test["ci_low"] <= test["delta"] <= test["ci_high"]
    assert test["level"] == 0.95
    only1, only2 = int((right1 & ~right2).sum()), int((right2 & ~right1).sum())
    assert (test["only_baseline_right"], test["only_candidate_right"]) == (only1, only2)
    p = 1.0 if only1 + only2 == 0 else binomtest(min(only1, only2), only1 + only2, 0.5).pvalue
    assert test["mcnemar_p"] == pytest.approx(min(p, 1.0), abs=1e-12)
    assert isinstance(test["verdict"], str)
    assert "v2" in test["verdict"]
    assert "v1" in test["verdict"]
    assert f"{delta:+.4f}" in test["verdict"]
    assert f"McNemar p={test['mcnemar_p']:.3g}" in test["verdict"]
    assert test["significant"] == (
        (test["ci_low"] > 0 or test["ci_high"] < 0) and test["mcnemar_p"] < 0.05
    )


def test_compare_markdown(
    gated: tuple[Context, list[RegisteredVersion]], flow: dict[str, Any]
) -> None:
    ctx, _ = gated
    text = ok(mlops(ctx.settings.root, "compare", MODEL, "1", "2", "--markdown")).stdout
    assert text.startswith(f"### {MODEL}: v1 vs v2")
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert table[0] == "|  | v1 | v2 |"
    assert table[1] == "|---|---|---|"
    assert any(line.startswith("| accuracy (now, same test split) | 0.") for line in table)
    assert any(line.startswith("| stage | production | staging |") for line in table)
    verdicts = [line for line in text.splitlines() if line.startswith("**Verdict:** ")]
    assert len(verdicts) == 1
    assert "v2" in verdicts[0]
    assert "McNemar p=" in verdicts[0]


def test_compare_stage_references(
    gated: tuple[Context, list[RegisteredVersion]], flow: dict[str, Any]
) -> None:
    ctx, _ = gated
    result = ok(mlops(ctx.settings.root, "compare", MODEL, "@staging", "@production"))
    # staging (v2) is the baseline, production (v1) the candidate.
    assert "v2 (@staging)" in result.stdout
    assert "v1 (@production)" in result.stdout
    verdicts = [line for line in result.stdout.splitlines() if line.startswith("verdict: ")]
    assert len(verdicts) == 1
    v1_vs_v2 = "v1 and v2 score the same" in verdicts[0] or "v1 is " in verdicts[0]
    assert v1_vs_v2, verdicts[0]
    assert "than v2" in verdicts[0] or "score the same" in verdicts[0]


# --- bad input --------------------------------------------------------------------------

LONG = "m" * 300
BAD_INPUT: dict[str, tuple[tuple[str, ...], str]] = {
    "name-with-slash": (("show", "a/b", "1"), "model name 'a/b'"),
    "name-with-dotdot": (("promote", "a..b", "1", "--to", "staging"), "model name 'a..b'"),
    "name-with-percent": (("history", "a%b"), "model name 'a%b'"),
    "name-300-chars": (("list", LONG), "model name 'mmmm"),
    "name-in-register": (("register", "--run", "a" * 32, "--name", "x/y"), "model name 'x/y'"),
    "version-0": (("show", MODEL, "0"), "version '0'"),
    "version-negative": (("promote", MODEL, "--to", "staging", "--", "-1"), "version '-1'"),
    "version-decimal": (("show", MODEL, "1.5"), "version '1.5'"),
    "version-word": (("compare", MODEL, "1", "abc"), "version 'abc'"),
    "unknown-stage": (("promote", MODEL, "2", "--to", "prod"), "stage 'prod': unknown"),
    "unknown-stage-ref": (("compare", MODEL, "@prod", "@staging"), "stage 'prod': unknown"),
    "stage-already-held": (
        ("promote", MODEL, "2", "--to", "staging"),
        "version 2 is already in staging",
    ),
    "unknown-model": (
        ("show", "nosuch", "1"),
        "model nosuch: not registered (registered models: digits)",
    ),
    "unknown-stage-show": (
        ("show", MODEL, "@prod"),
        "stage 'prod': unknown (configured stages: staging, production, archived)",
    ),
    "unknown-stage-lineage": (("lineage", MODEL, "@prod"), "stage 'prod': unknown"),
    "archive-the-holder": (
        ("archive", MODEL, "1"),
        "digits v1 holds production: archiving it leaves production empty",
    ),
    "unknown-model-promote": (("promote", "nosuch", "1", "--to", "staging"), "model nosuch"),
    "unknown-version": (("promote", MODEL, "99", "--to", "production"), "no version 99"),
    "unknown-version-show": (("show", MODEL, "99"), "no version 99"),
    "run-not-hex": (("register", "--run", "not-a-run-id"), "32 hexadecimal characters"),
    "run-unknown": (("register", "--run", "0123456789abcdef" * 2), "not found"),
}


@pytest.fixture(scope="module")
def bad_input(
    gated: tuple[Context, list[RegisteredVersion]], flow: dict[str, Any]
) -> dict[str, Any]:
    """Every bad command run once against the finished life cycle, with the registry's
    state before and after each, and `history --json` before and after them all."""
    ctx, _ = gated
    root = ctx.settings.root
    seen: dict[str, Any] = {"history_before": as_json(mlops(root, "history", MODEL, "--json"))}
    for case, (args, _) in BAD_INPUT.items():
        before = state(ctx)
        seen[case] = (mlops(root, *args), before, state(ctx))
    seen["history_after"] = as_json(mlops(root, "history", MODEL, "--json"))
    seen["runs"] = client(ctx).search_runs(
        [client(ctx).get_experiment_by_name(MODEL).experiment_id]  # type: ignore[union-attr]
    )
    return seen


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_rejected_in_one_line(case: str, bad_input: dict[str, Any]) -> None:
    result, before, after = bad_input[case]
    line = one_line_error(result, 2)
    assert BAD_INPUT[case][1] in line
    assert len(line) < 200, line  # a 300-character name is cut short
    assert result.stdout == ""
    assert before == after


def test_bad_input_leaves_history_unchanged(bad_input: dict[str, Any]) -> None:
    assert bad_input["history_after"] == bad_input["history_before"]
    assert len(bad_input["history_before"]) == 10
    # No register run was opened for the runs that do not exist.
    assert all(r.data.tags.get("mlops.stage") == "register" for r in bad_input["runs"])
    assert len(bad_input["runs"]) == 3


def test_option_like_version_is_a_usage_error(
    gated: tuple[Context, list[RegisteredVersion]], flow: dict[str, Any]
) -> None:
    ctx, _ = gated
    before = state(ctx)
    result = mlops(ctx.settings.root, "show", MODEL, "-1")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "No such option: -1" in result.stderr
    assert state(ctx) == before


@pytest.mark.parametrize(
    "name", ["a\x00b", "digits\x00", "a/b", "a..b", "a%2fb", "", "1abc", "m" * 64, "../x"]
)
def test_check_model_name_refuses(name: str) -> None:
    with pytest.raises(UserError) as caught:
        check_model_name(name)
    message = str(caught.value)
    assert "\n" not in message
    assert "\x00" not in message
    assert len(message) < 200


@pytest.mark.parametrize("name", ["digits", "a", "Model_v2.1-rc", "m" * 63])
def test_check_model_name_accepts(name: str) -> None:
    assert check_model_name(name) == name


# --- a guarded project: permissions, tampered and pickled artifacts, escapes ----------


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A project at `outer/inner/project` with production for alice only; version 2's
    weights overwritten with other bytes and version 3's with a pickle that creates
    a marker file (outside the project) when unpickled."""
    outer = tmp_path_factory.mktemp("outer")
    root = outer / "inner" / "project"
    root.mkdir(parents=True)
    write_project(root, GUARDED)
    ctx = context(root)
    versions = [register_small(ctx, MODEL, seed=seed) for seed in (0, 1, 2)]
    assert [v.version for v in versions] == ["1", "2", "3"]
    markers = outer / "markers"
    markers.mkdir()
    weights_file(ctx, 2).write_bytes(b"these are not the weights you registered\n" * 64)

    torch.save(OpenForWriting(markers / "unpickled-artifact"), weights_file(ctx, 3))
    return {"ctx": ctx, "outer": outer, "markers": markers, "versions": versions}


def test_payloads_fire_when_unpickled(tmp_path: Path) -> None:
    """The payloads used below do create their marker when loaded (the tests that check
    the marker never appears would otherwise prove nothing)."""

    torch.save(OpenForWriting(tmp_path / "a"), tmp_path / "a.pt")
    torch.load(tmp_path / "a.pt", weights_only=False)
    assert (tmp_path / "a").exists()
    pickle.loads(pickle.dumps(Touch(tmp_path / "b")))
    assert (tmp_path / "b").exists()


def test_permissions(guarded: dict[str, Any]) -> None:
    ctx: Context = guarded["ctx"]
    root = ctx.settings.root
    before = state(ctx)
    denied = mlops(root, "promote", MODEL, "1", "--to", "production", env={"MLOPS_USER": "bob"})
    line = one_line_error(denied, 1)
    assert "bob may not" in line
    assert "alice" in line
    after = state(ctx)
    for key in ("stages", "holders", "aliases", "tags"):
        assert before[key] == after[key], key
    assert after["ledger"][:-1] == before["ledger"]
    entry = after["ledger"][-1]
    assert (entry["action"], entry["version"], entry["to_stage"]) == ("promote", 1, "production")
    assert (entry["actor"], entry["outcome"]) == ("bob", "denied")
    assert entry["evidence"] == {"permitted": ["alice"]}

    done = ok(mlops(root, "promote", MODEL, "1", "--to", "production", env={"MLOPS_USER": "alice"}))
    assert "promoted" in done.stdout
    assert aliases(ctx)["production"] == 1
    entry = asdict(ctx.store.history(MODEL)[-1])
    assert (entry["actor"], entry["outcome"], entry["version"]) == ("alice", "done", 1)


def _unchanged_but_a_refusal(before: dict[str, Any], after: dict[str, Any], version: int) -> None:
    for key in ("stages", "holders", "aliases"):
        assert before[key] == after[key], key
    assert after["ledger"][:-1] == before["ledger"]
    entry = after["ledger"][-1]
    assert (entry["version"], entry["to_stage"], entry["outcome"]) == (
        version,
        "staging",
        "refused",
    )
    gates = {g["gate"]: g["passed"] for g in entry["evidence"]["gates"]}
    assert gates == {"artifact integrity": False}


def test_tampered_artifact_is_refused(guarded: dict[str, Any]) -> None:
    ctx: Context = guarded["ctx"]
    root = ctx.settings.root
    before = state(ctx)
    line = one_line_error(mlops(root, "promote", MODEL, "2", "--to", "staging"), 1, True)
    assert "refused by gate 'artifact integrity'" in line
    assert "files differ" in line
    refused = state(ctx)
    _unchanged_but_a_refusal(before, refused, 2)

    line = one_line_error(mlops(root, "compare", MODEL, "1", "2"), 1, progress=True)
    assert "version 2" in line
    assert "artifacts/model.safetensors differs" in line
    assert state(ctx) == refused


def test_pickled_artifact_is_never_unpickled(guarded: dict[str, Any]) -> None:
    ctx: Context = guarded["ctx"]
    root = ctx.settings.root
    marker = guarded["markers"] / "unpickled-artifact"
    before = state(ctx)
    line = one_line_error(mlops(root, "promote", MODEL, "3", "--to", "staging"), 1, True)
    assert "refused by gate 'artifact integrity'" in line
    refused = state(ctx)
    _unchanged_but_a_refusal(before, refused, 3)

    line = one_line_error(mlops(root, "compare", MODEL, "1", "3", "--json"), 1, True)
    assert "version 3" in line
    assert "artifacts/model.safetensors differs" in line
    assert state(ctx) == refused
    assert not marker.exists()


@pytest.fixture(scope="module")
def pickled_run(guarded: dict[str, Any]) -> dict[str, Any]:
    """A training run whose `weights/model.safetensors` is a pickle that runs
    `touch MARKER`, with the run's sha256 tag matching it, and `register --run` on it."""

    ctx: Context = guarded["ctx"]
    marker = guarded["markers"] / "unpickled-run"
    weights = guarded["outer"] / "weights"
    weights.mkdir()
    (weights / "model.safetensors").write_bytes(pickle.dumps(Touch(marker)))
    shutil.copy(weights_file(ctx, 1).parent / "model.json", weights / "model.json")
    ctx.connect_mlflow()
    experiment = tracking.ensure_experiment(MODEL, ctx.settings)
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.set_tag(tracking.TAG_MODEL_SHA, file_digest(weights / "model.safetensors"))
        for name in ("model.safetensors", "model.json"):
            mlflow.log_artifact(str(weights / name), artifact_path="weights")
    shutil.rmtree(weights)
    before = state(ctx)
    versions_before = len(client(ctx).search_model_versions(f"name = '{MODEL}'"))
    result = mlops(ctx.settings.root, "register", "--run", run.info.run_id)
    return {
        "result": result,
        "marker": marker,
        "before": before,
        "after": state(ctx),
        "versions": (versions_before, len(client(ctx).search_model_versions(f"name = '{MODEL}'"))),
    }


def test_register_run_with_pickled_weights_loads_nothing(pickled_run: dict[str, Any]) -> None:
    result = pickled_run["result"]
    assert result.returncode != 0, result.stdout
    assert not pickled_run["marker"].exists()
    assert pickled_run["after"] == pickled_run["before"]
    before, after = pickled_run["versions"]
    assert after == before


def test_register_run_with_pickled_weights_is_refused_in_one_line(
    pickled_run: dict[str, Any],
) -> None:
    line = one_line_error(pickled_run["result"], 1)
    assert "refused" in line


ESCAPES: list[tuple[str, ...]] = [
    ("show", "../../etc", "1"),
    ("show", "{abs}", "1"),
    ("show", "%2e%2e%2fetc", "1"),
    ("history", "../../escaped"),
    ("promote", "../../escaped", "1", "--to", "staging"),
    ("compare", "%2e%2e%2f%2e%2e%2fescaped", "1", "2"),
    ("register", "--run", "0123456789abcdef" * 2, "--name", "../../escaped"),
    ("list", "{abs}"),
]


def test_names_that_try_to_escape_the_project(guarded: dict[str, Any]) -> None:
    ctx: Context = guarded["ctx"]
    outer: Path = guarded["outer"]
    absolute = str(outer / "escaped")
    files_before, before = tree(outer), state(ctx)
    for args in ESCAPES:
        argv = [absolute if a == "{abs}" else a for a in args]
        line = one_line_error(mlops(ctx.settings.root, *argv), 2)
        assert "model name" in line, argv
    assert tree(outer) == files_before
    assert state(ctx) == before
    assert not (outer / "escaped").exists()
    assert not (outer / "etc").exists()


def test_archiving_a_stage_holder_needs_force_and_a_reason(guarded: dict[str, Any]) -> None:
    ctx: Context = guarded["ctx"]
    root = ctx.settings.root
    if ctx.store.holders(MODEL).get("production") != 1:  # test_permissions did it
        ok(mlops(root, "promote", MODEL, "1", "--to", "production", env={"MLOPS_USER": "alice"}))
    before = state(ctx)
    line = one_line_error(mlops(root, "archive", MODEL, "1"), 2)
    assert "digits v1 holds production: archiving it leaves production empty" in line
    assert "--force --reason" in line
    assert state(ctx) == before
    assert "--reason" in one_line_error(mlops(root, "archive", MODEL, "1", "--force"), 2)
    assert state(ctx) == before

    done = as_json(mlops(root, "archive", MODEL, "1", "--force", "--reason", "withdrawn",
                         "--json"))  # fmt: skip
    assert (done["version"], done["to_stage"], done["forced"]) == (1, "archived", True)
    assert done["emptied"] == ["production"]
    assert "production" not in aliases(ctx)
    assert "production" not in ctx.store.holders(MODEL)
    entry = ctx.store.history(MODEL)[-1]
    assert (entry.action, entry.version, entry.to_stage, entry.outcome) == (
        "archive", 1, "archived", "done",
    )  # fmt: skip
    assert (entry.forced, entry.reason, entry.evidence["emptied"]) == (
        True, "withdrawn", ["production"],
    )  # fmt: skip
    # Nobody holds production now, and every command that resolves it says so.
    empty = (
        "error: model digits: no version holds production (no stage is held; "
        "`mlops registry promote digits VERSION --to production`)"
    )
    assert one_line_error(mlops(root, "show", MODEL, "@production"), 2) == empty
    assert one_line_error(cli(root, "serve", "digits@production"), 2, progress=True) == empty


RESOLVING = [
    ("serve", "nosuch@production"),
    ("export", "nosuch@production"),
    ("monitor", "drift", "nosuch"),
    ("registry", "show", "nosuch", "@production"),
    ("registry", "lineage", "nosuch", "1"),
    ("registry", "history", "nosuch"),
    ("registry", "promote", "nosuch", "1", "--to", "staging"),
    ("registry", "compare", "nosuch", "1", "2"),
]


def test_an_unregistered_model_is_named_with_the_registered_ones(
    gated: tuple[Context, list[RegisteredVersion]], flow: dict[str, Any]
) -> None:
    """Every command that resolves MODEL@STAGE says the same thing, and `monitor drift`
    says it before looking for inputs."""
    ctx, _ = gated
    before = state(ctx)
    for args in RESOLVING:
        line = one_line_error(cli(ctx.settings.root, *args), 2, progress=True)
        assert line == "error: model nosuch: not registered (registered models: digits)", args
    assert state(ctx) == before


# --- an MLflow tracking server over http -----------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A real `mlflow server` (SQLite backend, served artifacts) and a project using it."""
    base = tmp_path_factory.mktemp("http")
    port = exposure.free_port()
    url = f"http://127.0.0.1:{port}"
    log = (base / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server",
         "--backend-store-uri", f"sqlite:///{base / 'srv.db'}",
         "--artifacts-destination", str(base / "served"),
         "--serve-artifacts",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        if not ui.wait_until_up(url, process, timeout=180):
            log.flush()
            raise AssertionError(
                f"mlflow server did not start:\n{(base / 'server.log').read_text()}"
            )
        root = base / "project"
        root.mkdir()
        write_project(root, OPEN_GATES)
        env = {"MLOPS_TRACKING_URI": url}
        ctx = context(root, env)
        versions = [register_small(ctx, MODEL, seed=seed) for seed in (0, 1)]
        yield {"ctx": ctx, "env": env, "url": url, "versions": versions, "base": base}
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        # uvicorn's workers live in the server's session
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


def test_registry_over_an_http_tracking_server(server: dict[str, Any]) -> None:
    ctx: Context = server["ctx"]
    env: dict[str, str] = server["env"]
    root = ctx.settings.root
    assert ctx.settings.tracking_uri == server["url"]
    assert [v.version for v in server["versions"]] == ["1", "2"]

    done = ok(mlops(root, "promote", MODEL, "1", "--to", "staging", env=env))
    assert "digits v1 promoted: none → staging" in done.stdout
    remote = MlflowClient(tracking_uri=server["url"], registry_uri=server["url"])
    assert remote.get_registered_model(MODEL).aliases == {"staging": "1"}
    assert remote.get_model_version(MODEL, "1").tags[STAGE_TAG] == "staging"

    rows = as_json(mlops(root, "list", "--json", env=env))
    assert {r["version"]: r["aliases"] for r in rows} == {2: [], 1: ["staging"]}

    result = as_json(mlops(root, "compare", MODEL, "@staging", "2", "--json", env=env))
    assert [c["version"] for c in result["versions"]] == [1, 2]
    [test] = result["tests"]
    assert (test["baseline"], test["candidate"]) == (1, 2)
    assert test["ci_low"] <= test["delta"] <= test["ci_high"]
    assert 0.0 <= test["mcnemar_p"] <= 1.0
    assert isinstance(test["verdict"], str)
    assert test["verdict"]
    for col in result["versions"]:
        assert col["now"]["accuracy"] > 0.9
    assert remote.get_registered_model(MODEL).aliases == {"staging": "1"}


def test_model_files_go_to_the_servers_artifact_store(server: dict[str, Any]) -> None:
    ctx: Context = server["ctx"]
    assert ctx.settings.artifact_root == "mlflow-artifacts:/"
    served = server["base"] / "served"
    weights = list(served.rglob("artifacts/model.safetensors"))
    assert len(weights) >= 2, sorted(str(p) for p in served.rglob("*"))[:20]
    assert not (ctx.settings.root / ".mlops" / "artifacts").exists()
