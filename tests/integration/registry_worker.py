"""Worker processes for the registry concurrency tests: real, separate processes that
promote, register or hold a lock against the same stores as the test.

`promote` and `register` are targets for a `multiprocessing` spawn context (barriers
make the workers act at the same moment); `hold-lock` and `acquire-lock` run as a
script, light enough (SQLAlchemy only, no torch or MLflow) to start in under a second:

    python tests/integration/registry_worker.py hold-lock ROOT NAME READY_FILE
    python tests/integration/registry_worker.py acquire-lock ROOT NAME WAIT_S

The script reads its stores from the `MLOPS_*` variables of its environment.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from mlops.settings import Settings
from registry.db.store import RegistryStore

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: make `tests.integration` importable
    sys.path.insert(0, str(REPO))

from mlops.errors import UserError  # noqa: E402 - after the path above
from registry.promotion import change_stage  # noqa: E402
from registry.stages import Ref  # noqa: E402
from tests.integration.registry_project import context, register_small, train_small  # noqa: E402

ALREADY = "already"
PROMOTED = "promoted"


def _quiet_torch() -> None:
    # Several workers share two cores: one thread each avoids oversubscription.
    import torch

    torch.set_num_threads(1)


def promote(
    root: str,
    env: dict[str, str],
    model: str,
    version: int,
    rounds: int,
    start: Any,
    done: Any,
    results: Any,
    timeout: float,
) -> None:
    """Each round: wait on `start`, promote `version` to production, report
    `(round, version, outcome, started, ended)` on `results`, wait on `done`.

    The outcome is `promoted`, `already` (the version held production, so the move was
    refused), or `error: …` for anything else."""
    try:
        _quiet_torch()
        ctx = context(Path(root), env)
        _ = ctx.store  # schema check once, before the first round
    except BaseException:
        results.put((-1, version, "error: " + traceback.format_exc(), 0.0, 0.0))
        start.abort()
        done.abort()
        raise
    for r in range(rounds):
        start.wait(timeout)
        began = time.time()
        try:
            change_stage(ctx, model, Ref(version=version), "production")
            outcome = PROMOTED
        except UserError as exc:
            outcome = ALREADY if "already in production" in str(exc) else f"error: {exc}"
        except Exception as exc:  # reported to the test, which fails on it
            outcome = f"error: {type(exc).__name__}: {exc}"
        results.put((r, version, outcome, began, time.time()))
        done.wait(timeout)


def register(
    root: str,
    env: dict[str, str],
    model: str,
    seed: int,
    start: Any,
    results: Any,
    timeout: float,
) -> None:
    """Wait on `start`, then train and register one small model with `seed`; report
    `(seed, "ok", version, reused, started, ended)` or `(seed, "error", traceback, …)`.

    Everything slow to load the first time (torch's optimisers, MLflow's PyTorch
    flavour) is loaded before the barrier, so the registrations themselves overlap."""
    try:
        import mlflow.pytorch  # noqa: F401
        from mlflow.models import infer_signature  # noqa: F401

        _quiet_torch()
        ctx = context(Path(root), env)
        _ = ctx.store
        train_small(ctx.settings.root, seed, steps=1)
    except BaseException:
        results.put((seed, "error", traceback.format_exc(), False, 0.0, 0.0))
        start.abort()
        raise
    began = time.time()
    try:
        start.wait(timeout)
        began = time.time()
        got = register_small(ctx, model, seed=seed, steps=20)
        results.put((seed, "ok", got.version, got.reused, began, time.time()))
    except Exception:
        results.put((seed, "error", traceback.format_exc(), False, began, time.time()))


def _store(root: str) -> Any:
    return RegistryStore(Settings.from_env(cwd=Path(root)).database_url)


def hold_lock(root: str, name: str, ready: str) -> None:
    """Take the lock `name`, write our pid to `ready`, then hold it until killed."""
    with _store(root).lock(name, wait=60):
        tmp = Path(ready + ".tmp")
        tmp.write_text(str(os.getpid()))
        tmp.replace(ready)
        while True:
            time.sleep(1)


def acquire_lock(root: str, name: str, wait: float) -> None:
    """Take and release the lock `name`; print how long taking it took, as JSON."""
    store = _store(root)
    began = time.monotonic()
    with store.lock(name, wait=wait):
        elapsed = time.monotonic() - began
    print(json.dumps({"pid": os.getpid(), "elapsed": elapsed}))


def main(argv: list[str]) -> None:
    mode, *args = argv
    if mode == "hold-lock":
        hold_lock(args[0], args[1], args[2])
    elif mode == "acquire-lock":
        acquire_lock(args[0], args[1], float(args[2]))
    else:
        raise SystemExit(f"unknown mode {mode!r} (hold-lock, acquire-lock)")


if __name__ == "__main__":
    main(sys.argv[1:])
