"""The MLflow edge: connecting to the store, stage runs that never stay RUNNING, lookups.

Every MLflow call of the pipeline goes through here. A stage run records the host,
pid and process start time that own it; when a later stage starts, RUNNING runs
whose owner process is gone (killed with SIGKILL, a crashed machine) are closed
as KILLED. Every store call is retried through a short outage of the database (see
`mlops.retry`); a run whose logging gave up still ends FAILED if the store comes back
within the retry budget.
"""

from __future__ import annotations

import getpass
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

from mlops import migrations, retry
from mlops.db import driver_url
from mlops.errors import Interrupted, StoreError, UserError
from mlops.lineage import git_commit
from mlops.owners import Owner
from mlops.settings import Settings, redact

if TYPE_CHECKING:
    from mlflow.entities import Run

T = TypeVar("T")

TAG_STAGE = "mlops.stage"
TAG_HOST = "mlops.host"
TAG_PID = "mlops.pid"
TAG_PID_STARTED = "mlops.pid_started"
TAG_CLOSED_BY = "mlops.closed_by"
TAG_MODEL_SHA = "mlops.model_sha256"
# The artifact root of the store `connect` pointed MLflow at (process-wide, as MLflow's
# own tracking URI is): model versions may only be read from inside it.
_CONNECTED: dict[str, str] = {}


def connect(settings: Settings) -> None:
    """Point MLflow (tracking and registry) at the configured store, creating the local
    folder of the embedded default when needed."""
    import mlflow

    if settings.tracking_uri.startswith("sqlite:///"):
        Path(settings.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(
            parents=True, exist_ok=True
        )
        migrations.drop_leftovers(settings.tracking_uri)  # of a first use cut short
    retry.budget_s()  # a bad MLOPS_STORE_RETRY_S is refused before any work
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # "Creating initial MLflow database tables…": not news to the person running a stage.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    # MLflow logs a traceback for every failed attempt; we log one line per outage.
    logging.getLogger("mlflow.store.db.utils").addFilter(retry.quiet_mlflow)
    # Our commands print their own progress; MLflow's per-download bars are noise.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    uri = driver_url(settings.tracking_uri)  # postgresql:// → the psycopg 3 driver we ship
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    _CONNECTED["artifact_root"] = settings.artifact_root


def artifact_root() -> str | None:
    """The artifact root of the store MLflow was last connected to (None: not connected)."""
    return _CONNECTED.get("artifact_root")


def retried(fn: Callable[[], T]) -> T:
    """`fn()` (a call to the tracking store), retried through a short outage."""
    import mlflow

    url = mlflow.get_tracking_uri().replace("+psycopg://", "://", 1)  # as configured
    return retry.call(fn, "tracking store", url)


def local_artifacts(location: str) -> bool:
    """True for an artifact location on the local disk (`file://…` or a bare path)."""
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):", location)
    return scheme is None or scheme.group(1).lower() == "file"


def through_server(settings: Settings) -> bool:
    """True when tracking goes through an MLflow server (team mode)."""
    return settings.tracking_uri.startswith(("http://", "https://"))


MOVED_SUFFIX = "-embedded"


def move_hint(settings: Settings, name: str, experiment_id: str) -> str:
    """How to give `name` to a new experiment whose artifacts go through the server: the
    old one is renamed `<name>-embedded` and keeps its runs (and their local files)."""
    return (
        f"MLFLOW_TRACKING_URI={redact(settings.tracking_uri)} mlflow experiments rename "
        f"-x {experiment_id} --new-name {name}{MOVED_SUFFIX} (its runs stay there; the next "
        f"run makes a new {name} on the server's store)"
    )


def check_team_location(settings: Settings, name: str, location: str, experiment_id: str) -> None:
    """Refuse runs through a server that would write artifacts to this machine's disk: an
    experiment made in embedded mode keeps its local artifact location for good."""
    if not through_server(settings) or not local_artifacts(location):
        return
    raise UserError(
        f"experiment {name}: its artifacts are in {location}, on this machine's disk (it was "
        f"made in embedded mode), so runs through the server {redact(settings.tracking_uri)} "
        f"would write there, out of every other host's reach; move it: "
        + move_hint(settings, name, experiment_id)
    )


def ensure_experiment(name: str, settings: Settings) -> str:
    """The id of the experiment `name`, created with artifacts under the artifact root.

    Through a tracking server, artifacts never go to this machine's disk: an experiment
    whose location is local (made in embedded mode) or a local `MLOPS_ARTIFACT_ROOT` is
    refused with one line that says how to move."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    try:
        found = retried(lambda: client.get_experiment_by_name(name))
        if found is not None:
            check_team_location(settings, name, found.artifact_location, found.experiment_id)
            if found.lifecycle_stage == "deleted":
                retried(partial(client.restore_experiment, found.experiment_id))
            return str(found.experiment_id)
        if through_server(settings) and local_artifacts(settings.artifact_root):
            raise UserError(
                f"MLOPS_ARTIFACT_ROOT={settings.artifact_root} is on this machine's disk but "
                f"runs go through the server {redact(settings.tracking_uri)}: unset it (the "
                "server stores artifacts, mlflow-artifacts:/) or use a store every host "
                "reaches (s3://, gs://, …)"
            )
        location = f"{settings.artifact_root.rstrip('/')}/{name}"
        return str(retried(lambda: client.create_experiment(name, artifact_location=location)))
    except MlflowException as exc:
        if "already exists" in str(exc):
            found = retried(lambda: client.get_experiment_by_name(name))
            if found is not None:
                return str(found.experiment_id)
        detail = retry.detail(exc, settings.tracking_uri)
        raise StoreError(f"tracking store {redact(settings.tracking_uri)}: {detail}") from None


def _owner_alive(run: Run) -> bool:
    tags = run.data.tags
    try:
        owner = Owner(tags[TAG_HOST], int(tags[TAG_PID]), float(tags[TAG_PID_STARTED]))
    except (KeyError, ValueError):
        return True
    return owner.alive() is not False  # another host's run: we cannot tell, leave it


def close_stale_runs(experiment_id: str) -> list[str]:
    """Mark RUNNING runs of this host whose process is gone as KILLED; return their ids."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    closed: list[str] = []
    runs = retried(
        lambda: client.search_runs(
            [experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000
        )
    )
    for run in runs:
        if not _owner_alive(run):
            run_id = run.info.run_id
            retried(partial(client.set_tag, run_id, TAG_CLOSED_BY, "stale-run-recovery"))
            retried(partial(client.set_terminated, run_id, status="KILLED"))
            closed.append(run_id)
    return closed


def _create_run(settings: Settings, experiment_id: str, name: str, tags: dict[str, str]) -> str:
    """Create the run with its context tags set by us: the fluent `start_run` resolves
    them through MLflow's context providers, which costs ~0.3 s in a fresh process."""

    from mlflow.tracking import MlflowClient

    context = {
        "mlflow.user": getpass.getuser(),
        "mlflow.source.type": "LOCAL",
        "mlflow.source.name": " ".join(sys.argv[:1]) or "python",
    }
    commit = git_commit(settings.root)
    if commit != "unknown":
        context["mlflow.source.git.commit"] = commit
        name = f"{name} · {commit[:7]}"
    client = MlflowClient()
    run = retried(lambda: client.create_run(experiment_id, run_name=name, tags=context | tags))
    return str(run.info.run_id)


def _raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signum)


@contextmanager
def stage_run(
    settings: Settings,
    experiment: str,
    stage: str,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
) -> Iterator[str]:
    """Open an MLflow run for a pipeline stage and yield its id.

    It ends FINISHED on success, FAILED on an exception and KILLED on Ctrl-C or
    SIGTERM; runs left RUNNING by dead processes of this host are closed first.
    """
    import mlflow

    connect(settings)
    experiment_id = ensure_experiment(experiment, settings)
    close_stale_runs(experiment_id)
    me = Owner.current()
    own = {
        TAG_STAGE: stage,
        TAG_HOST: me.host,
        TAG_PID: str(me.pid),
        TAG_PID_STARTED: repr(me.started),
        **(tags or {}),
    }
    if parent_run_id:
        own["mlflow.parentRunId"] = parent_run_id
    # Keep a handler the process installed itself (a sweep worker's graceful stop).
    previous = signal.getsignal(signal.SIGTERM)
    if previous in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _raise_interrupted)
    nested = mlflow.active_run() is not None  # a trial's run inside the tune stage's run
    run_id = _create_run(settings, experiment_id, stage, own)
    try:
        retried(lambda: mlflow.start_run(run_id=run_id, nested=nested))
        yield run_id
    except (KeyboardInterrupt, Interrupted):
        _end_run(run_id, "KILLED")
        raise
    except BaseException:
        _end_run(run_id, "FAILED")
        raise
    else:
        _end_run(run_id, "FINISHED")
    finally:
        if previous in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, previous or signal.SIG_DFL)


def _end_run(run_id: str, status: str) -> None:
    """End `run_id` with `status`, whether or not it became the active run; retried
    (a fresh budget, even after logging gave up) so the run never stays RUNNING if the
    store comes back in time."""
    import mlflow
    from mlflow.tracking import MlflowClient

    def end() -> None:
        active = mlflow.active_run()
        if active is not None and active.info.run_id == run_id:
            # Pops the run before it writes: a retry finds it gone and writes below.
            mlflow.end_run(status=status)
        else:
            MlflowClient().set_terminated(run_id, status=status)

    retried(end)


def describe_run(run_id: str, what: str | None = None, note: str | None = None) -> None:
    """Make a run read well in the MLflow UI's runs list: its name becomes `what` followed
    by the short commit it ran at (the name's last part), and `note` (Markdown) becomes
    its description."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    if what is not None:
        run = retried(lambda: client.get_run(run_id))
        commit = run.data.tags.get("mlflow.source.git.commit", "")[:7]
        name = f"{what} · {commit}" if commit else what
        retried(partial(client.set_tag, run_id, "mlflow.runName", name))
    if note is not None:
        retried(partial(client.set_tag, run_id, "mlflow.note.content", note))


def log_params(values: dict[str, Any], prefix: str = "") -> None:
    """Log nested params flattened with dots (`train.model.dropout`)."""
    import mlflow

    flat: dict[str, Any] = {}

    def walk(node: Any, key: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{key}.{k}" if key else str(k))
        else:
            flat[key] = node

    walk(values, prefix)
    retried(lambda: mlflow.log_params(flat))


def run_in_experiment(settings: Settings, run_id: str, experiment: str) -> bool:
    """Whether `run_id` is a run of `experiment` in the configured store."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    connect(settings)
    client = MlflowClient()
    found = retried(lambda: client.get_experiment_by_name(experiment))
    if found is None:
        return False
    try:
        run = retried(lambda: client.get_run(run_id))
    except MlflowException:  # RESOURCE_DOES_NOT_EXIST
        return False
    return bool(run.info.experiment_id == found.experiment_id)


def find_run_by_tag(experiment: str, key: str, value: str, stage: str) -> str | None:
    """The newest FINISHED run of `stage` in `experiment` whose tag `key` equals `value`."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    found = retried(lambda: client.get_experiment_by_name(experiment))
    if found is None:
        return None
    runs = retried(
        lambda: client.search_runs(
            [found.experiment_id],
            filter_string=(
                f"tags.`{key}` = '{value}' and tags.`{TAG_STAGE}` = '{stage}' "
                "and attributes.status = 'FINISHED'"
            ),
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
    )
    return runs[0].info.run_id if runs else None


def run_tags(run_id: str) -> dict[str, str]:
    """The tags of a run."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    return dict(retried(lambda: client.get_run(run_id)).data.tags)


def log_metrics(
    values: dict[str, float], step: int | None = None, run_id: str | None = None
) -> None:
    """Log metrics to the active run, or to `run_id` (which may be finished)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    if run_id is None:
        retried(lambda: mlflow.log_metrics({k: float(v) for k, v in values.items()}, step=step))
        return
    client = MlflowClient()
    for key, value in values.items():
        retried(partial(client.log_metric, run_id, key, float(value), step=step or 0))


def set_tags(tags: dict[str, Any]) -> None:
    """Tag the active run."""
    import mlflow

    retried(lambda: mlflow.set_tags({k: str(v) for k, v in tags.items()}))


def log_artifacts(*files: str | Path, artifact_path: str | None = None) -> None:
    """Attach files to the active run."""
    import mlflow

    for file in files:
        retried(partial(mlflow.log_artifact, str(file), artifact_path=artifact_path))


class MetricsBuffer:
    """Collects per-epoch metrics in memory and sends them in one `log_batch` call per
    time window (and at `flush`), so logging never slows training down while the UI
    still shows live progress on long jobs. Through a store outage a flush retries;
    what could not be sent stays queued."""

    def __init__(self, run_id: str, window_seconds: float = 2.0) -> None:
        self.run_id = run_id
        self.window = window_seconds
        self.pending: list[Any] = []
        self.last_flush = time.monotonic()

    def add(self, values: dict[str, float], step: int) -> None:
        """Queue metrics of one step; flush if the window has passed."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.pending += [Metric(k, float(v), now, step) for k, v in values.items()]
        if time.monotonic() - self.last_flush >= self.window:
            self.flush()

    def flush(self) -> None:
        """Send everything queued (in chunks of MLflow's 1,000-metric batch limit)."""
        from mlflow.tracking import MlflowClient

        client = MlflowClient()
        while self.pending:
            chunk = self.pending[:1000]
            # The same Metric objects on a retry: MLflow skips the ones already stored.
            retried(partial(client.log_batch, self.run_id, metrics=chunk, synchronous=True))
            del self.pending[: len(chunk)]
        self.last_flush = time.monotonic()
