"""The registry under concurrency and crashes, on the embedded SQLite stores and on
PostgreSQL: real separate processes promoting and registering at the same moment,
commands SIGKILLed between the steps of a stage change, and a lock whose holder died.

After every round the four records of who holds production agree: MLflow's alias,
the store's holders, the versions' `mlops.stage` tags and the ledger.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from mlops import db
from mlops.errors import StoreError
from mlops.settings import Settings
from registry import mlflow_port
from registry.context import Context
from registry.db.models import LockRow
from registry.db.store import RegistryStore
from registry.mlflow_port import STAGE_TAG
from registry.promotion import CRASH_ENV, change_stage, lock_name
from registry.stages import Ref
from tests.integration import registry_worker as worker
from tests.integration.registry_project import NO_GATES, cli, context, register_small, write_project

# The `backend` fixture (conftest.py) puts these stores on PostgreSQL in its second run.
pytestmark = pytest.mark.stores("database", "tracking")

MODEL = "digits"
PROD = "production"
ROUNDS = 50
WAIT_S = 180.0  # barrier and queue timeouts: generous, a hang fails instead of blocking
SPAWN = multiprocessing.get_context("spawn")
WORKER = Path(__file__).resolve().parent / "registry_worker.py"


@pytest.fixture
def two_versions(tmp_path: Path, backend: dict[str, str]) -> Context:
    """A project without gates and versions 1 and 2 of `digits` registered."""
    write_project(tmp_path, NO_GATES)
    ctx = context(tmp_path, backend)
    for seed in (1, 2):
        assert register_small(ctx, MODEL, seed=seed, steps=20).version == str(seed)
    return ctx


@contextmanager
def processes(targets: list[tuple[Any, tuple[Any, ...]]]) -> Iterator[list[Any]]:
    """Start one spawned process per (function, args); the test joins them, and any
    still running when the block is left (a failed assertion) are killed."""
    procs = [SPAWN.Process(target=fn, args=args, daemon=True) for fn, args in targets]
    for p in procs:
        p.start()
    try:
        yield procs
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.exitcode is None:
                p.kill()
                p.join()


def drain(results: Any) -> list[Any]:
    """What the workers reported and nobody read yet."""
    found = []
    while True:
        try:
            found.append(results.get(timeout=1))
        except queue.Empty:
            return found


def env_of(ctx: Context) -> dict[str, str]:
    """The MLOPS_* settings that point another process at `ctx`'s stores."""
    s = ctx.settings
    if s.database_url.startswith("sqlite:"):
        return {}
    return {"MLOPS_DATABASE_URL": s.database_url, "MLOPS_TRACKING_URI": s.tracking_uri}


def stage_tags(model: str, versions: list[int]) -> dict[int, str]:
    tags = {}
    for v in versions:
        mv = mlflow_port.get_version(model, v)
        assert mv is not None, f"version {v} missing from MLflow"
        tags[v] = mv.tags.get(STAGE_TAG, "")
    return tags


def production_entries(ctx: Context, model: str = MODEL) -> list[Any]:
    return [
        e
        for e in ctx.store.history(model)
        if e.action == "promote" and e.to_stage == PROD and e.outcome in ("done", "repaired")
    ]


def agreed_holder(ctx: Context, versions: list[int], where: str) -> int:
    """Assert MLflow's alias, the store's holders, the stage tags (and the store's
    stages) and the ledger name one production holder; return it."""
    aliases = mlflow_port.aliases(MODEL)
    holders = ctx.store.holders(MODEL)
    assert set(aliases) == {PROD}, f"{where}: MLflow aliases {aliases}"
    holder = aliases[PROD]
    assert holders == {PROD: holder}, f"{where}: store holders {holders}, alias {aliases}"
    tags = stage_tags(MODEL, versions)
    assert [v for v, t in tags.items() if t == PROD] == [holder], f"{where}: tags {tags}"
    assert all(t in (PROD, "none") for t in tags.values()), f"{where}: tags {tags}"
    stages = {v: ctx.store.version(MODEL, v).stage for v in versions}  # type: ignore[union-attr]
    assert stages == tags, f"{where}: store stages {stages}, MLflow tags {tags}"
    last = production_entries(ctx)[-1]
    assert last.version == holder, f"{where}: ledger's last promotion names v{last.version}"
    assert ctx.store.intents() == [], f"{where}: intents left {ctx.store.intents()}"
    return holder


def test_simultaneous_promotions_leave_one_agreed_holder(two_versions: Context) -> None:
    ctx = two_versions
    root = str(ctx.settings.root)
    env = env_of(ctx)
    start, done = SPAWN.Barrier(3), SPAWN.Barrier(3)
    results = SPAWN.Queue()
    targets = [
        (worker.promote, (root, env, MODEL, v, ROUNDS, start, done, results, WAIT_S))
        for v in (1, 2)
    ]
    previous: int | None = None
    promoted_total = 0
    overlapped = 0
    with processes(targets) as procs:
        for r in range(ROUNDS):
            try:
                start.wait(WAIT_S)
                done.wait(WAIT_S)
            except threading.BrokenBarrierError:
                pytest.fail(f"round {r}: a worker failed: {drain(results)}")
            got = sorted(results.get(timeout=WAIT_S) for _ in range(2))
            outcomes = {v: outcome for _r, v, outcome, _b, _e in got}
            assert [g[0] for g in got] == [r, r], f"round {r}: reports {got}"
            assert all(o in (worker.PROMOTED, worker.ALREADY) for o in outcomes.values()), (
                f"round {r}: {outcomes}"
            )
            # The version not holding production at the start must always get it; the
            # holder is refused only when it went first ("already in production").
            for v, outcome in outcomes.items():
                if v != previous:
                    assert outcome == worker.PROMOTED, f"round {r}: v{v} {outcome}"
            assert worker.PROMOTED in outcomes.values(), f"round {r}: {outcomes}"
            promoted_total += sum(o == worker.PROMOTED for o in outcomes.values())
            (_, _, _, b1, e1), (_, _, _, b2, e2) = got
            overlapped += b1 < e2 and b2 < e1
            holder = agreed_holder(ctx, [1, 2], f"round {r}")
            assert len(production_entries(ctx)) == promoted_total, f"round {r}"
            previous = holder
        for p in procs:
            p.join(timeout=WAIT_S)
            assert p.exitcode == 0
    assert {e.outcome for e in production_entries(ctx)} == {"done"}
    # The two promotions really ran at the same moment (one waited on the other's lock).
    assert overlapped >= ROUNDS // 2, f"only {overlapped} of {ROUNDS} rounds overlapped"


def test_simultaneous_registrations_get_distinct_versions(
    tmp_path: Path, backend: dict[str, str]
) -> None:
    write_project(tmp_path, NO_GATES)
    ctx = context(tmp_path, backend)
    _ = ctx.store  # the registry's tables exist before the workers start,
    assert mlflow_port.aliases(MODEL) == {}  # and so do MLflow's
    n = 8
    start = SPAWN.Barrier(n)
    results = SPAWN.Queue()
    seeds = list(range(100, 100 + n))
    targets = [
        (worker.register, (str(tmp_path), backend, MODEL, seed, start, results, WAIT_S))
        for seed in seeds
    ]
    with processes(targets) as procs:
        got = [results.get(timeout=WAIT_S) for _ in seeds]
        for p in procs:
            p.join(timeout=WAIT_S)
    failed = [g for g in got if g[1] != "ok"]
    assert not failed, "\n".join(str(f[2]) for f in failed)
    assert [p.exitcode for p in procs] == [0] * n
    assert sorted(int(g[2]) for g in got) == list(range(1, n + 1))
    assert not any(g[3] for g in got), "a fresh model was reported as already registered"
    # The eight registrations ran at the same time: each began before any had ended.
    assert max(g[4] for g in got) < min(g[5] for g in got)

    in_mlflow = mlflow_port.all_versions(MODEL)
    assert [mv.version for mv in in_mlflow] == list(range(1, n + 1))
    assert {mv.status for mv in in_mlflow} == {"READY"}
    stored = {v.version: v for v in ctx.store.versions(MODEL)}
    assert sorted(stored) == list(range(1, n + 1))
    for mv in in_mlflow:
        assert stored[mv.version].run_id == mv.run_id
        assert stored[mv.version].sha256 == mv.tags["mlops.model_sha256"]
    assert len({v.sha256 for v in stored.values()}) == n
    by_seed = {g[0]: int(g[2]) for g in got}
    for seed, version in by_seed.items():
        assert stored[version].info["mlops.git_commit"] == f"commit{seed}"
    entries = [e for e in ctx.store.history(MODEL) if e.action == "register"]
    assert sorted(e.version for e in entries) == list(range(1, n + 1))  # type: ignore[type-var]
    assert all(e.outcome == "done" for e in entries)


def lock_holder_pid(ctx: Context, name: str) -> int | None:
    """The pid recorded on the lock `name`, or None when nobody holds it."""
    return store_lock_pid(ctx.store, name)


def store_lock_pid(store: RegistryStore, name: str) -> int | None:
    """The pid recorded on the lock `name` in `store`, or None when nobody holds it."""

    with db.session(store.url) as s:
        row = s.get(LockRow, name)
        return None if row is None else int(row.pid)


# Crash point → (the intent is left behind, MLflow's alias already moved).
CRASHES = [
    ("after-intent", True, False),
    ("after-mlflow", True, True),
    ("after-ledger", False, True),
]


def registry_state(ctx: Context) -> tuple[Any, ...]:
    """Intents, aliases, holders, ledger and the lock's holder: what a read must not change."""
    return (ctx.store.intents(MODEL), mlflow_port.aliases(MODEL), ctx.store.holders(MODEL),
            ctx.store.history(MODEL), lock_holder_pid(ctx, lock_name(MODEL)))  # fmt: skip


def read_writes_nothing(ctx: Context, env: dict[str, str], point: str, intent_left: bool) -> None:
    """`registry list` after a kill: the holders as the ledger has them, one warning line
    when an intent is pending, and nothing written."""
    seen = registry_state(ctx)
    listed = cli(ctx.settings.root, "registry", "list", "--json", env=env)
    assert listed.returncode == 0, f"{point}: {listed.stdout}{listed.stderr}"
    rows = {r["version"]: r for r in json.loads(listed.stdout) if r["name"] == MODEL}
    shown = 2 if intent_left else 1  # the holder as the ledger has it
    assert {v: r["aliases"] for v, r in rows.items()} == {shown: [PROD], 3 - shown: []}, point
    if intent_left:
        [warning] = listed.stderr.strip().splitlines()
        assert warning.startswith(
            f"warning: {MODEL}: the promotion of v1 → production by {ctx.actor} was left unfinished"
        ), warning
        assert f"mlops registry repair {MODEL}" in warning, warning
    else:
        assert listed.stderr == "", listed.stderr
    assert registry_state(ctx) == seen, point


def test_killed_promotion_is_repaired_by_the_next_command(two_versions: Context) -> None:
    ctx = two_versions
    root = ctx.settings.root
    env = env_of(ctx)
    change_stage(ctx, MODEL, Ref(version=2), PROD)
    assert agreed_holder(ctx, [1, 2], "before") == 2
    lock = lock_name(MODEL)
    for point, intent_left, alias_moved in CRASHES:
        entries_before = len(ctx.store.history(MODEL))
        killed = cli(
            root, "registry", "promote", MODEL, "1", "--to", PROD, env={**env, CRASH_ENV: point}
        )
        assert killed.returncode == -signal.SIGKILL, f"{point}: {killed.stdout}{killed.stderr}"

        # What the kill left: the intent, the alias, the store and the dead process's lock.
        intents = ctx.store.intents(MODEL)
        if intent_left:
            assert [(i.change.version, i.change.to_stage, i.change.displaced) for i in intents] == [
                (1, PROD, 2)
            ], point
        else:
            assert intents == [], point
        assert mlflow_port.aliases(MODEL) == {PROD: 1 if alias_moved else 2}, point
        ledger_written = not intent_left
        assert ctx.store.holders(MODEL) == {PROD: 1 if ledger_written else 2}, point
        assert len(ctx.store.history(MODEL)) == entries_before + ledger_written, point
        dead = lock_holder_pid(ctx, lock)
        assert dead is not None, f"{point}: the killed command's lock is gone"

        # A read command writes nothing: it shows the ledger's state and warns once.
        read_writes_nothing(ctx, env, point, intent_left)
        if intent_left:
            # `sync` does not take the half-moved aliases for holders: it says why
            synced = cli(root, "registry", "sync", MODEL, "--json", env=env)
            assert synced.returncode == 0, f"{point}: {synced.stdout}{synced.stderr}"
            found = json.loads(synced.stdout)
            assert any("unfinished" in line for line in found["refused"]), found
            assert ctx.store.holders(MODEL) == {PROD: 2}, point

        # `mlops registry repair` (or any command that changes the model) settles it: its
        # own actor's change is completed.
        repaired = cli(root, "registry", "repair", MODEL, "--json", env=env)
        assert repaired.returncode == 0, f"{point}: {repaired.stdout}{repaired.stderr}"
        settled = json.loads(repaired.stdout)
        assert [(s["version"], s["to_stage"], s["outcome"]) for s in settled] == (
            [(1, PROD, "repaired")] if intent_left else []
        ), point
        assert agreed_holder(ctx, [1, 2], f"{point}, after repair") == 1
        new = ctx.store.history(MODEL)[entries_before:]
        assert [(e.action, e.version, e.outcome) for e in new] == [
            ("promote", 1, "repaired" if intent_left else "done")
        ], point
        if intent_left:
            assert new[0].evidence["repaired_by"] == ctx.actor
            assert new[0].evidence["displaced"] == 2
            # The repair took the model's lock: the dead holder's was broken.
            assert lock_holder_pid(ctx, lock) is None, point
        else:
            # Nothing to repair, so the dead command's lock is still there...
            assert lock_holder_pid(ctx, lock) == dead, point

        # ...and the next promotion takes it over at once instead of waiting out its ttl.
        began = time.monotonic()
        change_stage(ctx, MODEL, Ref(version=2), PROD)
        assert time.monotonic() - began < 30, f"{point}: the next promotion waited"
        assert agreed_holder(ctx, [1, 2], f"{point}, promoted v2 again") == 2
        assert lock_holder_pid(ctx, lock) is None, point


def test_lock_of_a_killed_holder_is_taken_over(tmp_path: Path, backend: dict[str, str]) -> None:
    (tmp_path / ".dvc").mkdir()
    store = RegistryStore(Settings.from_env(env=backend, cwd=tmp_path).database_url)
    name = lock_name(MODEL)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "DVC_"))}
    env = {**clean, **backend}
    ready = tmp_path / "holder.pid"
    holder = subprocess.Popen(
        [sys.executable, str(WORKER), "hold-lock", str(tmp_path), name, str(ready)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert holder.poll() is None, holder.communicate()
            assert time.monotonic() < deadline, "the holder never took the lock"
            time.sleep(0.05)
        assert int(ready.read_text()) == holder.pid
        # A live holder is respected: nobody else gets the lock meanwhile.
        taken = pytest.raises(StoreError, match=f"pid {holder.pid} for more than")
        with taken, store.lock(name, wait=1.0):
            pytest.fail("took a lock its live holder still holds")
        os.kill(holder.pid, signal.SIGKILL)
        assert holder.wait(timeout=30) == -signal.SIGKILL
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()

    taker = subprocess.run(
        [sys.executable, str(WORKER), "acquire-lock", str(tmp_path), name, "60"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert taker.returncode == 0, taker.stderr[-3000:]
    report = json.loads(taker.stdout.strip().splitlines()[-1])
    assert report["pid"] != holder.pid
    assert report["elapsed"] < 5.0, f"took {report['elapsed']:.1f} s to take over the lock"
    # The taker released it on exit: it is free at once.
    began = time.monotonic()
    with store.lock(name, wait=5.0):
        assert time.monotonic() - began < 1.0


def test_a_lock_is_reentered_by_its_holder_and_waited_on_by_others(
    tmp_path: Path, backend: dict[str, str]
) -> None:
    """A stage change holds the model's lock and may sync the model, which takes the same
    lock: the holder re-enters it at once (no self-deadlock), while another thread still
    waits for it, and it is released only when the outermost hold ends."""
    (tmp_path / ".dvc").mkdir()
    store = RegistryStore(Settings.from_env(env=backend, cwd=tmp_path).database_url)
    name = lock_name(MODEL)
    other: list[BaseException | str] = []

    def contend() -> None:
        try:
            with store.lock(name, wait=1.0):
                other.append("took it")
        except StoreError as exc:
            other.append(exc)

    entered = False
    with store.lock(name, wait=5.0):
        # No waiting allowed: without re-entry this raises StoreError at once.
        with store.lock(name, wait=0.0):
            entered = True
        # Leaving the inner hold did not release the outer one.
        assert store_lock_pid(store, name) == os.getpid()
        thread = threading.Thread(target=contend)
        thread.start()
        thread.join(timeout=60)
    assert entered
    assert len(other) == 1 and isinstance(other[0], StoreError), other
    assert store_lock_pid(store, name) is None
    with store.lock(name, wait=5.0):
        pass
