"""mlops.retry: which errors are an outage, the budget, the backoff and the one-line error
(driver exceptions built in memory; the real outage is tests/integration/test_store_outage)."""

from __future__ import annotations

import logging
import sqlite3

import psycopg
import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, TEMPORARILY_UNAVAILABLE
from sqlalchemy import exc as sa

from mlops import db, retry
from mlops.errors import StoreError, UserError

URL = "postgresql://postgres:s3cret@db.example:5432/mlflow"
REFUSED = 'connection failed: connection to server at "10.0.0.1", port 5432: Connection refused'


def _wrapped(orig: Exception, kind: type[sa.DBAPIError] = sa.OperationalError) -> Exception:
    """As SQLAlchemy raises a driver error (the driver's error as its cause)."""
    try:
        raise kind("SELECT 1", {}, orig) from orig
    except sa.DBAPIError as exc:
        return exc


def _mlflow(cause: Exception, code: int = TEMPORARILY_UNAVAILABLE) -> MlflowException:
    """As MLflow's SqlAlchemyStore re-raises it (OperationalError: TEMPORARILY_UNAVAILABLE)."""
    try:
        raise MlflowException(str(cause), error_code=code) from cause
    except MlflowException as exc:
        return exc


@pytest.mark.parametrize(
    "exc",
    [
        _wrapped(psycopg.OperationalError(REFUSED)),
        _wrapped(psycopg.OperationalError("terminating connection due to administrator command")),
        _wrapped(psycopg.InterfaceError("the connection is closed"), sa.InterfaceError),
        _mlflow(_wrapped(psycopg.OperationalError(REFUSED))),
        psycopg.OperationalError("the database system is starting up"),
        MlflowException("API request failed: Max retries exceeded with url (Connection refused)"),
    ],
)
def test_outages_are_transient(exc: Exception) -> None:
    assert retry.transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        _wrapped(psycopg.errors.UniqueViolation("duplicate key"), sa.IntegrityError),
        _wrapped(psycopg.OperationalError('password authentication failed for user "x"')),
        _wrapped(psycopg.OperationalError('database "nope" does not exist')),
        _wrapped(sqlite3.OperationalError("database is locked")),
        _mlflow(ValueError("Invalid metric name"), INTERNAL_ERROR),
        MlflowException("Changing param values is not allowed"),
        StoreError("tracking store x: unreachable for 60 s: refused"),
        ValueError("connection refused"),
    ],
)
def test_other_errors_are_not(exc: Exception) -> None:
    assert not retry.transient(exc)


def test_budget_from_the_environment() -> None:
    assert retry.budget_s({}) == retry.DEFAULT_S == 60
    assert retry.budget_s({retry.ENV: "2.5"}) == 2.5
    assert retry.budget_s({retry.ENV: "0"}) == 0
    for bad in ("-1", "soon", "inf", "nan"):
        with pytest.raises(UserError, match=f"MLOPS_STORE_RETRY_S={bad}"):
            retry.budget_s({retry.ENV: bad})


def test_call_retries_until_the_store_answers(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(retry.ENV, "10")
    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise _mlflow(_wrapped(psycopg.OperationalError(REFUSED)))
        return "ok"

    with caplog.at_level(logging.INFO, logger="mlops.retry"):
        assert retry.call(flaky, "tracking store", URL) == "ok"
    assert len(attempts) == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "tracking store postgresql://postgres:***@db.example:5432/mlflow: unreachable "
        f"({REFUSED}); retrying for up to 10 s"
    ]
    assert "s3cret" not in caplog.text


def test_call_gives_up_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(retry.ENV, "0.5")
    orig = psycopg.OperationalError(f"{REFUSED} (user postgres, password s3cret)\nIs it up?")

    def down() -> None:
        raise _wrapped(orig)

    with pytest.raises(StoreError) as raised:
        retry.call(down, "optuna storage", URL)
    message = str(raised.value)
    assert message.startswith(
        "optuna storage postgresql://postgres:***@db.example:5432/mlflow: unreachable for 0.5 s: "
        "connection failed:"
    )
    assert "\n" not in message and "s3cret" not in message
    assert raised.value.__cause__ is None


def test_call_never_retries_other_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(retry.ENV, "10")
    attempts: list[int] = []

    def broken() -> None:
        attempts.append(1)
        raise _wrapped(psycopg.errors.UniqueViolation("duplicate key"), sa.IntegrityError)

    with pytest.raises(sa.IntegrityError):
        retry.call(broken, "database", URL)
    assert attempts == [1]


def test_an_outage_met_while_a_given_up_call_is_handled_is_still_transient() -> None:
    """Ending a run FAILED after logging gave up: the new connection error carries the
    StoreError as its context, and is retried all the same."""
    try:
        raise StoreError("tracking store x: unreachable for 6 s: refused")
    except StoreError:
        try:
            raise psycopg.OperationalError(REFUSED)
        except psycopg.OperationalError as orig:
            exc = _mlflow(_wrapped(orig))
    assert isinstance(exc.__cause__.__cause__.__context__, StoreError)  # type: ignore[union-attr]
    assert retry.transient(exc)


def test_a_tracking_server_answering_503_is_transient() -> None:
    """MLflow's REST client raises what the server says: its store is unavailable."""
    assert retry.transient(MlflowException("db down", error_code=TEMPORARILY_UNAVAILABLE))
    # MLflow's SQL store says the same of a locked SQLite file: not an outage.
    assert not retry.transient(_mlflow(_wrapped(sqlite3.OperationalError("database is locked"))))


def test_a_platform_database_transaction_that_could_not_connect_is_retried() -> None:
    url = "postgresql://mlops:s3cret@db.example:5432/mlops"
    lost = db.failure(url, _wrapped(psycopg.OperationalError(REFUSED)))
    assert isinstance(lost, retry.Unreachable) and retry.transient(lost)
    assert str(lost).startswith("database postgresql://mlops:***@db.example:5432/mlops: ")
    assert retry.detail(lost, url) == REFUSED
    local = db.failure("sqlite:///x.db", _wrapped(sqlite3.OperationalError("disk I/O error")))
    assert type(local) is StoreError and not retry.transient(local)
