"""Optuna's RDBStorage with every database call retried through a short outage.

A subclass, not a proxy: Optuna wraps an `RDBStorage` in its trial cache and checks
`isinstance(storage, BaseHeartbeat)` for heartbeats, so both keep working. The methods
that reach the database, public ones and the private ones the cache calls, are
retried by `mlops.retry`; a heartbeat that cannot be recorded is logged and skipped
(the thread beats again at its next interval). Imported only when a storage is built.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._rdb import models
from optuna.trial import TrialState
from sqlalchemy import func, select, update

from mlops import retry
from mlops.errors import StoreError

STORE = "optuna storage"
# Every RDBStorage method that runs a transaction (each one is a whole transaction).
CALLS = (
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_trial_user_attrs",
    "get_trial_system_attrs",
    "get_all_studies",
    "create_new_trial",
    "_create_new_trial",
    "set_trial_param",
    "_set_trial_param",
    "get_trial_param",
    # set_trial_state_values: below, retried too (SQLite needs one conditional UPDATE)
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number",
    "get_trial",
    "get_all_trials",
    "_get_trials",
    "get_best_trial",
    "_get_best_trial_id",
    "get_current_version",
    "_get_stale_trial_ids",
)

log = logging.getLogger("mlops.retry")


class RetryingRDBStorage(RDBStorage):
    """`RDBStorage` whose calls ride out a database outage of `MLOPS_STORE_RETRY_S`."""

    def __init__(self, url: str, *args: Any, shown_url: str = "", **kwargs: Any) -> None:
        super().__init__(url, *args, **kwargs)
        self.shown_url = shown_url or url  # the URL as configured, for messages

    def count_trials(self, study_id: int) -> dict[str, int]:
        """Trials of the study by state name, in one aggregate query: polling a study
        this way stays cheap however many trials (with their per-epoch values) it has."""

        query = (
            select(models.TrialModel.state, func.count())
            .where(models.TrialModel.study_id == study_id)
            .group_by(models.TrialModel.state)
        )

        def read() -> dict[str, int]:
            with self.engine.connect() as conn:
                return {state.name: int(n) for state, n in conn.execute(query)}

        return retry.call(read, STORE, self.shown_url)

    def record_heartbeat(self, trial_id: int) -> None:
        """Record the heartbeat; log and skip it when the store stays unreachable."""
        try:
            retry.call(lambda: super(RetryingRDBStorage, self).record_heartbeat(trial_id),
                       STORE, self.shown_url)  # fmt: skip
        except StoreError as exc:
            log.warning("%s; heartbeat of trial %d skipped", exc, trial_id)


class CountingRetryCallback(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a stale trial (queued WAITING with the same params), counting
    the retries this process queued so the worker that queued one can run it itself."""

    queued = 0

    def __call__(self, study: Any, trial: Any) -> None:
        tries = len(trial.system_attrs.get("retry_history", []))  # super() appends to it
        super().__call__(study, trial)
        if self._max_retry is None or tries < self._max_retry:
            self.queued += 1


def _retrying(name: str) -> Callable[..., Any]:
    method = getattr(RDBStorage, name)

    @functools.wraps(method)
    def call(self: RetryingRDBStorage, *args: Any, **kwargs: Any) -> Any:
        return retry.call(lambda: method(self, *args, **kwargs), STORE, self.shown_url)

    return call


def _set_trial_state_values(
    self: RetryingRDBStorage, trial_id: int, state: TrialState, values: Any = None
) -> bool:
    """Optuna's, except that on SQLite a trial moves from RUNNING to FAIL in one
    conditional UPDATE. SQLite ignores Optuna's `SELECT ... FOR UPDATE`, so two workers
    failing the same stale trial could both read it RUNNING, both fail it and both queue
    its retry; now exactly one moves it, and the other gets Optuna's
    `UpdateFinishedTrialError`, as on PostgreSQL."""
    if state != TrialState.FAIL or values is not None or self.engine.dialect.name != "sqlite":
        return bool(RDBStorage.set_trial_state_values(self, trial_id, state, values))
    claim = (
        update(models.TrialModel)
        .where(models.TrialModel.trial_id == trial_id)
        .where(models.TrialModel.state == TrialState.RUNNING)
        .values(state=TrialState.FAIL, datetime_complete=datetime.now())
    )
    with self.engine.begin() as conn:
        if conn.execute(claim).rowcount:
            return True
    # Not RUNNING: finished by another process (Optuna raises), or still WAITING.
    return bool(RDBStorage.set_trial_state_values(self, trial_id, state, values))


for _name in CALLS:
    setattr(RetryingRDBStorage, _name, _retrying(_name))


@functools.wraps(_set_trial_state_values)
def _retried_state(self: RetryingRDBStorage, *args: Any, **kwargs: Any) -> bool:
    return bool(
        retry.call(lambda: _set_trial_state_values(self, *args, **kwargs), STORE, self.shown_url)
    )


setattr(RetryingRDBStorage, "set_trial_state_values", _retried_state)  # noqa: B010
