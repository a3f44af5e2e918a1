"""The registry against `mlops server start --auth`: MLflow's basic auth decides who may
move a stage, a refusal changes nothing and is recorded, a read never writes, and a
change left half done is completed only for someone who was allowed to make it.

Users (from the users file): alice and carol edit every registered model (MANAGE), bob
only reads (the default permission), dave manages the models but may only read their
versions (a grant made through MLflow's auth API), so the store lets him move an alias
and then refuses the version tag that goes with it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from mlflow.server.auth.client import AuthServiceClient
from mlflow.tracking import MlflowClient

from mlops.exposure import free_port
from mlops.params import NO_STAGE
from registry.context import Context
from registry.db.store import Change, Entry
from registry.mlflow_port import STAGE_TAG
from registry.promotion import CRASH_ENV
from tests.integration.registry_project import (
    OPEN_GATES,
    cli,
    context,
    register_small,
    write_project,
)
from tests.integration.sweep_project import clean_env

MLOPS = str(Path(sys.executable).parent / "mlops")
ADMIN_PW = "admin-secret-0123"
PASSWORDS = {
    "alice": "alice-secret-0123",
    "bob": "bob-secret-012345",
    "carol": "carol-secret-0123",
    "dave": "dave-secret-01234",
}
USERS = """
admin: {password_env: TEST_ADMIN_PW}
default_permission: READ
users:
  alice: {password: alice-secret-0123, experiments: {"*": EDIT}, registered_models: {"*": MANAGE}}
  bob: {password: bob-secret-012345}
  carol: {password: carol-secret-0123, experiments: {"*": EDIT}, registered_models: {"*": MANAGE}}
  dave: {password: dave-secret-01234, registered_models: {"*": MANAGE}}
"""
# One model per test (the tests do not depend on each other's state): name → versions.
MODELS = {"reader": 1, "crashed": 1, "unverified": 1, "unverified-forced": 1, "undone": 2}


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A server with auth (its own project folder and stores) and a project whose
    registry uses it; the versions are registered by the admin."""

    base = tmp_path_factory.mktemp("auth")
    server = base / "server"
    (server / ".dvc").mkdir(parents=True)
    (server / "users.yaml").write_text(USERS)
    server_env = {"TEST_ADMIN_PW": ADMIN_PW}
    port = free_port()
    started = subprocess.run(
        [MLOPS, "server", "start", "--port", str(port), "--auth", "--auth-config",
         "users.yaml"], cwd=server, env=clean_env(server_env), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    url = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = (
        "admin", ADMIN_PW,
    )  # fmt: skip
    try:
        AuthServiceClient(url).grant_user_permission(
            "dave", "registered_model_version", "*", "READ"
        )
        root = base / "project"
        root.mkdir()
        write_project(root, OPEN_GATES)
        ctx = context(root, {"MLOPS_TRACKING_URI": url})
        for name, count in MODELS.items():
            for seed in range(count):
                register_small(ctx, name, seed=seed, steps=20)
        yield {"ctx": ctx, "url": url, "root": root}
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        subprocess.run([MLOPS, "server", "stop"], cwd=server, env=clean_env(server_env),
                       capture_output=True, timeout=120)  # fmt: skip


def as_user(team: dict[str, Any], user: str, *args: str, **extra: str) -> Any:
    """`mlops ARGS…` in the project as `user` (their MLflow credentials and MLOPS_USER)."""
    env = {
        "MLOPS_TRACKING_URI": team["url"],
        "MLFLOW_TRACKING_USERNAME": user,
        "MLFLOW_TRACKING_PASSWORD": PASSWORDS[user],
        "MLOPS_USER": user,
        **extra,
    }
    return cli(team["root"], *args, env=env)


def ok(done: Any) -> Any:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    return done


def error_line(done: Any, code: int = 1, progress: bool = False) -> str:
    """The one `error:` line (last; progress lines may come first if `progress`)."""
    assert done.returncode == code, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert progress or len(lines) == 1, done.stderr
    assert lines[-1].startswith("error: "), lines
    assert not [line for line in lines[:-1] if line.startswith(("error", "warning"))], lines
    return str(lines[-1])


def state(ctx: Context, model: str) -> dict[str, Any]:
    """Everything a stage change touches, in MLflow and in the registry's store."""

    uri = ctx.settings.tracking_uri
    mc = MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions = ctx.store.versions(model)
    return {
        "aliases": dict(mc.get_registered_model(model).aliases or {}),
        "tags": {
            v.version: mc.get_model_version(model, str(v.version)).tags.get(STAGE_TAG)
            for v in versions
        },
        "holders": ctx.store.holders(model),
        "stages": {v.version: v.stage for v in versions},
        "ledger": [asdict(e) for e in ctx.store.history(model)],
        "intents": ctx.store.intents(model),
    }


def test_a_reader_is_refused_in_one_line_and_nothing_changes(team: dict[str, Any]) -> None:
    ctx: Context = team["ctx"]
    model = "reader"
    before = state(ctx, model)
    for extra in ((), ("--force", "--reason", "because")):
        done = as_user(team, "bob", "registry", "promote", model, "1", "--to", "staging", *extra)
        line = error_line(done)
        assert line == (
            f"error: bob may not change {model} in the tracking store (granted READ; moving "
            "v1 to staging needs EDIT on the registered model); nothing changed"
        )
    after = state(ctx, model)
    assert after["intents"] == []
    for key in ("aliases", "tags", "holders", "stages"):
        assert after[key] == before[key], key
    denied = after["ledger"][len(before["ledger"]) :]
    assert [(e["actor"], e["action"], e["version"], e["to_stage"], e["outcome"], e["forced"])
            for e in denied] == [("bob", "promote", 1, "staging", "denied", False)] * 2  # fmt: skip
    assert denied[0]["evidence"]["store"] == {"store": team["url"], "user": "bob",
                                              "permission": "READ"}  # fmt: skip

    # Nothing is left for an editor's next command to "repair".
    listed = ok(as_user(team, "alice", "registry", "list", model, "--json"))
    assert listed.stderr == ""
    assert json.loads(ok(as_user(team, "alice", "registry", "repair", "--json")).stdout) == []
    assert state(ctx, model) == after
    # A dry run reads only: a reader may evaluate the gates.
    dry = json.loads(ok(as_user(team, "bob", "registry", "promote", model, "1", "--to",
                                "staging", "--dry-run", "--json")).stdout)  # fmt: skip
    assert dry["passed"] is True and dry["dry_run"] is True
    assert state(ctx, model) == after


def test_reads_never_write_and_a_repair_completes_only_what_was_allowed(
    team: dict[str, Any],
) -> None:
    ctx: Context = team["ctx"]
    model = "crashed"
    killed = as_user(team, "alice", "registry", "promote", model, "1", "--to", "staging",
                     **{CRASH_ENV: "after-intent"})  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = state(ctx, model)
    [intent] = left["intents"]
    assert intent.entry.actor == "alice"
    assert intent.entry.evidence["store"]["permission"] == "MANAGE"
    assert left["aliases"] == {} and left["holders"] == {}

    # Reads by anyone: one warning line, nothing written.
    for user in ("bob", "carol"):
        for args in (("list", model), ("show", model, "1"), ("history", model),
                     ("lineage", model, "1")):  # fmt: skip
            done = ok(as_user(team, user, "registry", *args, "--json"))
            [warning] = done.stderr.strip().splitlines()
            assert warning.startswith(
                f"warning: {model}: the promotion of v1 → staging by alice was left unfinished"
            ), warning
    assert state(ctx, model) == left

    # A reader's write command cannot complete it: one line, it stays pending.
    refused = as_user(team, "bob", "registry", "repair", model)
    line = error_line(refused, progress=True)
    assert f"model {model}: the promotion of v1 → staging by alice is pending" in line
    assert "refused to let you complete it: PERMISSION_DENIED" in line
    after = state(ctx, model)
    assert after["intents"] == left["intents"] and after["aliases"] == {}
    assert after["ledger"][-1]["actor"] == "bob" and after["ledger"][-1]["outcome"] == "denied"

    # Another editor's command completes it: alice was granted MANAGE when she decided it.
    settled = json.loads(ok(as_user(team, "carol", "registry", "repair", "--json")).stdout)
    assert [(s["model"], s["version"], s["outcome"], s["actor"]) for s in settled] == [
        (model, 1, "repaired", "alice")
    ]
    done = state(ctx, model)
    assert done["intents"] == []
    assert done["aliases"] == {"staging": "1"} and done["holders"] == {"staging": 1}
    assert done["tags"] == {1: "staging"}
    entry = done["ledger"][-1]
    assert (entry["actor"], entry["outcome"], entry["to_stage"]) == ("alice", "repaired", "staging")
    assert entry["evidence"]["repaired_by"] == "carol"
    assert entry["evidence"]["repair"] == "the tracking store granted alice MANAGE"


@pytest.mark.parametrize("forced", [False, True])
def test_an_intent_nobody_shows_was_allowed_is_undone(team: dict[str, Any], forced: bool) -> None:
    """What mlops before this check left behind: a reader's refused promotion (forced past
    its gates, or not) pending, with no record of what the store granted, here with its
    alias already moved. The next command by an editor puts MLflow back to what the
    ledger shows and records it; it never completes it."""

    ctx: Context = team["ctx"]
    model = "unverified-forced" if forced else "unverified"
    change = Change(model, 1, NO_STAGE, "production", True, None, NO_STAGE)
    evidence = {"gates": [], "passed": not forced, "displaced": None}
    reason = "hotfix" if forced else ""
    entry = Entry("promote", model, 1, NO_STAGE, "production", "bob", reason, evidence, forced)
    ctx.store.add_intent(change, entry)
    MlflowClient(team["url"], team["url"]).set_registered_model_alias(model, "production", "1")

    ok(as_user(team, "alice", "registry", "promote", model, "1", "--to", "staging"))
    after = state(ctx, model)
    assert after["intents"] == []
    assert after["aliases"] == {"staging": "1"} and after["holders"] == {"staging": 1}
    assert after["tags"] == {1: "staging"} and after["stages"] == {1: "staging"}
    undone, promoted = after["ledger"][-2:]
    assert (undone["actor"], undone["outcome"], undone["to_stage"]) == (
        "alice", "abandoned", "production",
    )  # fmt: skip
    assert undone["reason"] == (
        "undid the promotion of v1 → production by bob: nothing shows that bob was allowed "
        "to make it"
    )
    assert undone["evidence"]["undone"] == ["alias production v1 → unset"]
    assert undone["evidence"]["intent"]["actor"] == "bob"
    assert undone["evidence"]["intent"]["forced"] is forced
    assert (promoted["actor"], promoted["outcome"], promoted["to_stage"]) == (
        "alice", "done", "staging",
    )  # fmt: skip


def test_a_write_the_store_refuses_is_undone(team: dict[str, Any]) -> None:
    """dave may move aliases but not tag versions: the store accepts the alias moves and
    refuses the tag; the command puts the aliases back and records the refusal."""
    ctx: Context = team["ctx"]
    model = "undone"
    ok(as_user(team, "alice", "registry", "promote", model, "1", "--to", "production"))
    ok(as_user(team, "alice", "registry", "promote", model, "2", "--to", "staging"))
    before = state(ctx, model)
    assert before["aliases"] == {"production": "1", "staging": "2"}

    done = as_user(team, "dave", "registry", "promote", model, "@staging", "--to", "production")
    line = error_line(done, progress=True)
    assert line == (
        "error: the tracking store refused v2 tag mlops.stage staging → production: "
        "PERMISSION_DENIED (/api/2.0/mlflow/model-versions/set-tag); nothing changed"
    )
    after = state(ctx, model)
    for key in ("aliases", "tags", "holders", "stages", "intents"):
        assert after[key] == before[key], key
    [entry] = after["ledger"][len(before["ledger"]) :]
    assert (entry["actor"], entry["outcome"], entry["version"]) == ("dave", "denied", 2)
    assert entry["evidence"]["refused_write"] == "v2 tag mlops.stage staging → production"
    assert entry["evidence"]["not_undone"] == []
    assert entry["evidence"]["store"]["permission"] == "MANAGE"
