"""The edge to Optuna: storage, samplers, pruners, studies, trial counts.

Embedded storage is SQLite through Optuna's RDBStorage, in WAL mode with a 60 s busy
timeout, so parallel workers on one machine queue for the write lock instead of
failing with "database is locked"; the same class runs on PostgreSQL for many hosts.
RDBStorage (unlike the journal file storage) supports heartbeats: a trial whose worker
stops beating for `GRACE_S` is marked FAIL and retried with the same params. Every call
is retried through a short outage of the database (`mlops.tuning.retry`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import sqlite3
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops import migrations
from mlops.db import driver_url
from mlops.errors import Interrupted, MlopsError, StoreError, first_line
from mlops.params import TuneParams
from mlops.retry import budget_s
from mlops.settings import redact

if TYPE_CHECKING:
    import optuna

HEARTBEAT_S = 2
GRACE_S = 10
MAX_RETRY = 3


def storage(url: str, heartbeat: bool = True) -> optuna.storages.RDBStorage:
    """RDBStorage on `url` with heartbeats and retry of failed (stale) trials, whose
    calls retry through a database outage of up to `MLOPS_STORE_RETRY_S`."""

    import optuna

    budget_s()  # a bad MLOPS_STORE_RETRY_S is refused before any work

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna.study._optimize").addFilter(_one_line_stops)
    # Heartbeats and their retry callback are marked experimental; we rely on them.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(path, timeout=60) as conn:  # WAL persists in the file
            conn.execute("PRAGMA journal_mode=WAL")
        migrations.drop_leftovers(url)  # of an upgrade cut short (a full disk)
        kwargs = {"connect_args": {"timeout": 60}}
    else:
        kwargs = {"pool_pre_ping": True}
    from mlops.tuning.retry import CountingRetryCallback, RetryingRDBStorage

    try:
        return RetryingRDBStorage(
            driver_url(url),
            shown_url=url,
            engine_kwargs=kwargs,
            heartbeat_interval=HEARTBEAT_S if heartbeat else None,
            grace_period=GRACE_S if heartbeat else None,
            heartbeat_stale_trial_callback=CountingRetryCallback(max_retry=MAX_RETRY)
            if heartbeat
            else None,
        )
    except Exception as exc:  # sqlalchemy and optuna raise several types for a bad store
        raise StoreError(f"optuna storage {redact(url)}: {first_line(exc)}") from None


def worker_seed(seed: int, worker: str, start: int) -> int:
    """The sampler seed of worker `worker` (an index such as "0", or a label) of a sweep
    that began when the study had `start` trials: distinct per worker and per sweep of a
    study, the same when the same sweep is run again. Worker "0" of a new study gets
    `tune.seed` itself, as the tune stage does."""
    if worker == "0" and start == 0:
        return seed
    digest = hashlib.sha256(f"{seed}:{worker}:{start}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


_STOPPED: set[str] = set()  # "Trial N" of trials a stop ended, whose second line is dropped


def _one_line_stops(record: logging.LogRecord) -> bool:
    """A logging filter for Optuna's two "Trial N failed" warnings: none for a trial that
    a stop (Ctrl-C, SIGTERM) ended, as the worker or the sweep says it stopped; no
    traceback for one that failed with one of our one-line errors."""
    exc = record.exc_info[1] if record.exc_info else None
    trial = record.getMessage().split(" failed", 1)[0]
    if isinstance(exc, KeyboardInterrupt | Interrupted):
        _STOPPED.add(trial)
        return False
    if trial in _STOPPED and record.getMessage().endswith(" failed with value None."):
        _STOPPED.discard(trial)
        return False
    if isinstance(exc, MlopsError):
        record.exc_info, record.exc_text = None, None
    return True


def sampler(p: TuneParams, seed: int | None = None) -> optuna.samplers.BaseSampler:
    """The configured sampler, seeded with `seed` (default `tune.seed`). TPE runs with
    `constant_liar`: trials other workers are running count as bad results, so parallel
    workers do not all search the same region."""
    import optuna

    seed = p.seed if seed is None else seed
    if p.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if p.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if p.sampler == "grid":
        return optuna.samplers.GridSampler(grid(p), seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def grid(p: TuneParams) -> dict[str, list[Any]]:
    """The grid of every searched param (floats need a `step`)."""
    values: dict[str, list[Any]] = {}
    for name, d in p.space.items():
        if d.type == "categorical":
            values[name] = list(d.choices or [])
            continue
        assert d.low is not None and d.high is not None
        step = d.step or 1
        n = math.floor((d.high - d.low) / step + 1e-9) + 1  # never past `high`
        points = [min(round(d.low + i * step, 12), d.high) for i in range(n)]
        values[name] = [int(v) for v in points] if d.type == "int" else points
    return values


def pruner(p: TuneParams) -> optuna.pruners.BasePruner:
    """The configured pruner (`none`: never prune)."""
    import optuna

    if p.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=3)
    if p.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=2)
    if p.pruner == "successive_halving":
        # Rungs at epochs 3 and 9, keeping the top third at each: on the pruning
        # benchmark (30 trials x 20 epochs, 5 seeds) 0.49x the epochs at the same best
        # accuracy; min_resource=2 with the default factor 4 lost a point.
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=3, reduction_factor=3)
    return optuna.pruners.NopPruner()


def fail_stale(study: optuna.Study) -> int:
    """Fail the study's stale trials (their workers stopped beating) and return how many
    retries this call queued: a trial fails once, so exactly one caller queues its retry."""
    from optuna.storages import fail_stale_trials

    callback = study._storage.get_heartbeat_stale_trial_callback()  # type: ignore[attr-defined]
    before = getattr(callback, "queued", 0)
    fail_stale_trials(study)
    return getattr(callback, "queued", 0) - before


def open_study(
    url: str, name: str, p: TuneParams, heartbeat: bool = True, seed: int | None = None
) -> optuna.Study:
    """Create the study or load it (resumable), its sampler seeded with `seed` (default
    `tune.seed`); call once before starting workers. A new study is given the name of
    its metric (`tune.metric`), which optuna-dashboard shows instead of "Objective 0"."""
    import optuna

    study = optuna.create_study(
        storage=storage(url, heartbeat),
        study_name=name,
        direction=p.direction,
        sampler=sampler(p, seed),
        pruner=pruner(p),
        load_if_exists=True,
    )
    if study.metric_names is None:
        study.set_metric_names([p.metric])
    return study


def total(c: Counts) -> int:
    """Every trial of the study, whatever its state."""
    return c.complete + c.pruned + c.fail + c.running + c.waiting


@dataclass(frozen=True)
class Counts:
    """Trials of a study by state, and the best value so far."""

    complete: int
    pruned: int
    fail: int
    running: int
    waiting: int
    best: float | None

    @property
    def finished(self) -> int:
        """Trials that count toward the requested number (complete or pruned)."""
        return self.complete + self.pruned


def counts(study: optuna.Study) -> Counts:
    """Count trials by state (one aggregate query on our storage) and the best value."""
    from optuna.trial import TrialState

    from mlops.tuning.retry import RetryingRDBStorage

    backend = getattr(study._storage, "_backend", study._storage)
    if isinstance(backend, RetryingRDBStorage):
        named = backend.count_trials(study._study_id)
        by = {s: named.get(s.name, 0) for s in TrialState}
    else:  # another storage (in memory): count what it returns
        by = {s: 0 for s in TrialState}
        for t in study.get_trials(deepcopy=False):
            by[t.state] += 1
    try:
        best = study.best_value if by[TrialState.COMPLETE] else None
    except ValueError:
        best = None
    return Counts(
        by[TrialState.COMPLETE],
        by[TrialState.PRUNED],
        by[TrialState.FAIL],
        by[TrialState.RUNNING],
        by[TrialState.WAITING],
        best,
    )
