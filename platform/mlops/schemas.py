"""Schema versions of every store the platform uses, and their upgrade.

Our own tables (the registry's, the schedules') carry their own Alembic revision in
the platform database and upgrade themselves on first use; MLflow's tracking database
and Optuna's storage have their own migrations, which MLflow and Optuna refuse to run
implicitly on an old schema. `mlops db upgrade` runs them all (idempotent), after
dropping what an interrupted batch migration left (`migrations.drop_leftovers`);
`mlops doctor` reports each one's revision against the one this code expects.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine

from mlops import db, migrations
from mlops.errors import StoreError
from mlops.scheduling import store as scheduling
from mlops.settings import Settings
from mlops.tuning.storage import storage
from registry.db import store as registry


@dataclass(frozen=True)
class Schema:
    """A store's schema: where it lives, its revision there, the one the code wants."""

    name: str
    url: str
    current: str | None  # None: not created yet (it is on first use)
    head: str
    error: str | None = None  # the store could not be read (unreachable)

    @property
    def ok(self) -> bool:
        """Readable, and current or not created yet."""
        return self.error is None and (self.current is None or self.current == self.head)


@dataclass(frozen=True)
class _Own:
    name: str
    migrations: Path
    version_table: str
    head: str


def _own() -> list[_Own]:
    named = (("registry tables", registry), ("schedule tables", scheduling))
    return [_Own(name, m.MIGRATIONS, m.VERSION_TABLE, m.HEAD_REVISION) for name, m in named]


def _exists(url: str) -> bool:
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///")).is_file()
    return True


def _alembic_head(script_location: str) -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", script_location)
    return str(ScriptDirectory.from_config(config).get_current_head())


def _mlflow_head() -> str:
    from mlflow.store.db.utils import _get_latest_schema_revision

    return str(_get_latest_schema_revision())


def _optuna_head() -> str:
    import optuna.storages._rdb.storage as rdb

    return _alembic_head(str(Path(rdb.__file__).parent / "alembic"))


def _read(name: str, url: str, version_table: str, head: str) -> Schema:
    # Read only: a status check never creates tables (MLflow and Optuna would).
    try:
        current = migrations.revision(url, version_table) if _exists(url) else None
    except StoreError as exc:
        return Schema(name, url, None, head, error=str(exc))
    return Schema(name, url, current, head)


def status(settings: Settings) -> list[Schema]:
    """Every SQL store's schema revision (a tracking server keeps its own)."""
    found = []
    if not settings.tracking_uri.startswith(("http://", "https://")):
        found.append(_read("MLflow tracking", settings.tracking_uri, "alembic_version",
                           _mlflow_head()))  # fmt: skip
    found.append(
        _read("Optuna storage", settings.optuna_storage, "alembic_version", _optuna_head())
    )
    for own in _own():
        found.append(_read(own.name, settings.database_url, own.version_table, own.head))
    return found


def upgrade(settings: Settings) -> list[tuple[Schema, Schema]]:
    """Bring every SQL store to the schema this code expects (creating what is missing);
    (before, after) pairs. Idempotent."""

    before = status(settings)
    unreachable = [s.error for s in before if s.error]
    if unreachable:
        raise StoreError(unreachable[0])
    for url in dict.fromkeys(s.url for s in before):  # what an interrupted upgrade left
        migrations.drop_leftovers(url)
    if not settings.tracking_uri.startswith(("http://", "https://")):
        from mlflow.store.db.utils import _upgrade_db
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        if before[0].current is None:
            # creates and stamps the tables
            SqlAlchemyStore(db.driver_url(settings.tracking_uri), settings.artifact_root)
        elif not before[0].ok:
            # MLflow's own engine settings: its migrations manage their transactions.
            engine = create_engine(db.driver_url(settings.tracking_uri))
            try:
                _upgrade_db(engine)
            finally:
                engine.dispose()
    rdb = storage(settings.optuna_storage, heartbeat=False)  # creates missing tables
    if rdb.get_current_version() != rdb.get_head_version():
        rdb.upgrade()
    for own in _own():
        migrations.upgrade(settings.database_url, own.migrations)
    return list(zip(before, status(settings), strict=True))
