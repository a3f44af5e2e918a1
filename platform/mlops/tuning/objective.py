"""Tuning: the objective (one training job per trial, pruned through the engine's epoch
callback), its MLflow child run, and the worker loop that shares a study.

The training engine never imports Optuna: pruning is an `on_epoch` callback built here
that raises Optuna's `TrialPruned`. Each trial derives a new train section from the
search space; the base params are never changed.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops import tracking, workspace
from mlops.data import Schema, read_parquet
from mlops.errors import MlopsError, UserError
from mlops.logged_training import train_logged
from mlops.models import build_model, spec_for_data
from mlops.params import DataParams, Params, TrainParams, is_data_param
from mlops.settings import Settings
from mlops.training import check_metric, seed_everything
from mlops.tuning.search_space import data_values, derive, derive_data, suggest
from mlops.tuning.storage import GRACE_S, HEARTBEAT_S, counts, fail_stale, open_study

if TYPE_CHECKING:
    import optuna

TAG_STUDY = "mlops.optuna.study"
TAG_TRIAL = "mlops.optuna.trial"
TAG_THREADS = "mlops.threads"
RUN_ATTR = "mlflow_run_id"
# The MLflow run a trial's run is nested under (a sweep's, the tune stage's, a worker's):
# what a sweep that stops abnormally looks for to end the trials its workers left.
PARENT_ATTR = "mlops.parent_run_id"
# Set by a worker's SIGINT/SIGTERM handler: the running trial stops at its next epoch
# (raising KeyboardInterrupt inside the objective, so Optuna records it FAIL) and no
# new trial starts. Raising from the signal handler itself could land inside Optuna's
# own bookkeeping and leave a trial RUNNING.
STOP = threading.Event()
MAX_FAILED_RATIO = 1


def study_name(params: Params) -> str:
    """`tune.study_name`, else the pipeline's name and a hash of what the trials depend
    on: the tune section and the train params that are not searched (a trial sets the
    searched ones itself). A changed search starts a new study; writing a trial's values
    into the train section (`mlops sweep apply`) keeps it."""
    if params.tune.study_name:
        return params.tune.study_name
    train = params.train.model_dump(mode="json")
    for path in params.tune.space:
        node = train
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    basis = {
        "train": train,
        "tune": params.tune.model_dump(mode="json", exclude={"n_trials", "timeout"}),
    }
    digest = hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:10]
    return f"{params.pipeline.name}-{digest}"


@dataclass(frozen=True)
class Data:
    """Train and validation splits of the workspace's DVC splits: arrays, or streams."""

    schema: Any
    train: Any  # (x, y) arrays or a mlops.streaming.Stream
    val: Any


def require_splits(root: Path) -> tuple[Path, Path, Path]:
    """The schema and the train and validation splits `dvc repro` wrote (one line naming
    the first one missing)."""
    files = (
        root / workspace.SPLIT_SCHEMA,
        root / workspace.SPLITS["train"],
        root / workspace.SPLITS["val"],
    )
    for f in files:
        if not f.is_file():
            raise UserError(f"{f}: not found; run `dvc repro split` first")
    return files


def load_data(
    root: Path, train: TrainParams, data: DataParams | None = None, train_file: Path | None = None
) -> Data:
    """The splits `dvc repro` wrote (a clear error if they are missing), in memory or
    streamed as `train.loader` says; with `data`, a mixed table's encoding is refitted
    on the train split as `data` says (a trial that searches the tokenizer). `train_file`
    replaces the train split (the split plus production's labelled rows, to retrain)."""
    schema_file, split_train, val_file = require_splits(root)
    train_file = train_file or split_train
    schema = Schema.load(schema_file)
    if data is not None:
        schema = schema.fitted(read_parquet(train_file), data)
    return _loaded(schema, train, train_file, val_file)


def _loaded(schema: Schema, train: TrainParams, train_file: Path, val_file: Path) -> Data:
    from mlops.streaming import load_split

    parts = [load_split(f, schema, train.loader, train.seed) for f in (train_file, val_file)]
    return Data(schema, parts[0], parts[1])


def check_data_space(params: Params, schema: Schema) -> None:
    """Refuse (one line) a space that searches how columns are encoded on data that has
    none to encode (no categorical or text columns), or the tokenizer without text."""
    searched = sorted(p for p in params.tune.space if is_data_param(p))
    if not searched:
        return
    if not schema.columns:
        raise UserError(
            f"tune.space.{searched[0]}: the data has no categorical or text columns to encode"
        )
    has_text = "text" in schema.columns.values()
    tokenizer = [p for p in searched if p.startswith("data.tokenizer.")]
    if tokenizer and not has_text:
        raise UserError(f"tune.space.{tokenizer[0]}: the data has no text column to tokenize")


class TrialData:
    """The splits each trial trains on: the workspace's, or, for a trial that searches
    data params, the same splits encoded as its data section says (refitted on the train
    split; the last few encodings are kept, so trials that draw the same values share)."""

    KEEP = 4

    def __init__(self, root: Path, params: Params, base: Data | None = None) -> None:
        self.root = root
        self.params = params
        self.base = base if base is not None else load_data(root, params.train)
        check_data_space(params, self.base.schema)
        self._frame: Any = None
        self._fitted: OrderedDict[str, Data] = OrderedDict()

    def get(self, values: dict[str, Any], train: TrainParams) -> Data:
        """The data for a trial with these searched `values` (and train section)."""
        searched = data_values(values)
        if not searched:
            return self.base
        key = json.dumps(searched, sort_keys=True)
        if key in self._fitted:
            self._fitted.move_to_end(key)
            return self._fitted[key]
        _, train_file, val_file = require_splits(self.root)
        if self._frame is None:
            self._frame = read_parquet(train_file)
        data = derive_data(self.params.data, searched)
        schema = self.base.schema.fitted(self._frame, data)
        self._fitted[key] = found = _loaded(schema, train, train_file, val_file)
        while len(self._fitted) > self.KEEP:
            self._fitted.popitem(last=False)
        return found


def model_spec(model: Any, data: Data) -> Any:
    """The spec of a model trained on `data` (standardisation from the train split)."""

    return spec_for_data(model, data.schema, data.train)


def data_augmenter(params: TrainParams, data: Data) -> Any:
    """The augmenter `train.augment` asks for on these data (None: none)."""
    from mlops.augment import augmenter

    return augmenter(params.augment, data.schema.input_shape, bool(data.schema.image))


@dataclass(frozen=True)
class Job:
    """What a worker needs: where the stores are, the params, the study, the sweep run."""

    settings: Settings
    params: Params
    study: str
    parent_run_id: str | None = None
    threads: int | None = None  # None: `train.threads`
    seed: int | None = None  # the sampler's; None: `tune.seed`


def objective(job: Job, trial_data: TrialData) -> Callable[[optuna.Trial], float]:
    """Train one model per trial and return its best validation metric."""
    import optuna
    import torch

    p = job.params
    metric = p.tune.metric
    schema = trial_data.base.schema
    check_metric(schema.task, metric, "tune.metric")
    if p.train.init_from is not None:
        raise UserError(
            f"train.init_from = {p.train.init_from}: tuning trials do not start from a "
            "registered version yet (set tune.n_trials: 0 to fine-tune, or init_from: null)"
        )

    def run(trial: optuna.Trial) -> float:
        values = suggest(trial, p.tune.space, p.train.model.family)
        trial_params = derive(p.train, values, p.tune.epochs)
        if job.threads is not None:
            trial_params = trial_params.model_copy(update={"threads": job.threads})
        data = trial_data.get(values, trial_params)
        spec = model_spec(trial_params.model, data)
        tags = {
            TAG_STUDY: job.study,
            TAG_TRIAL: str(trial.number),
            "mlops.family": trial_params.model.family,
        }
        pruned_at: list[int] = []
        if job.parent_run_id:
            trial.set_user_attr(PARENT_ATTR, job.parent_run_id)
        with tracking.stage_run(
            job.settings, p.pipeline.name, f"trial {trial.number}", job.parent_run_id, tags
        ) as run_id:
            trial.set_user_attr(RUN_ATTR, run_id)
            tracking.log_params({k: str(v) for k, v in values.items()})
            on_epoch = _epoch_callback(trial, metric, p.tune.direction, pruned_at)
            try:
                result = train_logged(
                    run_id, lambda: build_model(spec), trial_params, (data.train, data.val),
                    schema.task, on_epoch, augment=data_augmenter(trial_params, data),
                )  # fmt: skip
            except optuna.TrialPruned:
                result = None
            tracking.set_tags({TAG_THREADS: torch.get_num_threads()})  # what it trained with
            family = trial_params.model.family
            if result is None:
                tracking.set_tags(
                    {"mlops.trial_state": "PRUNED", "mlops.pruned_at_epoch": pruned_at[-1]}
                )
                what = f"trial {trial.number} {family} · pruned at epoch {pruned_at[-1]}"
            else:
                seen = [h.metrics[metric] for h in result.history]
                value = min(seen) if p.tune.direction == "minimize" else max(seen)
                tracking.log_metrics({f"best_{metric}": value, "best_epoch": result.best_epoch})
                tracking.set_tags({"mlops.trial_state": "COMPLETE"})
                what = f"trial {trial.number} {family} · {metric} {value:.4f}"
            tracking.describe_run(run_id, what)
        if result is None:  # the run ends FINISHED; the trial is PRUNED
            raise optuna.TrialPruned(f"pruned at epoch {pruned_at[-1]}")
        return float(value)

    return run


def _epoch_callback(
    trial: optuna.Trial, metric: str, direction: str, pruned_at: list[int]
) -> Callable[[Any], None]:
    """Report the epoch to the pruner, prune or stop (see STOP)."""
    import optuna

    best_so_far: list[float] = []
    pick = min if direction == "minimize" else max

    def on_epoch(result: Any) -> None:
        if STOP.is_set():
            raise KeyboardInterrupt
        # The trial's value is its best epoch, so report the best so far: pruners then
        # compare what a trial has reached, not one noisy epoch.
        value = result.metrics[metric]
        if best_so_far:
            value = pick(value, best_so_far[-1])
        best_so_far.append(value)
        trial.report(value, result.epoch)
        if trial.should_prune():
            pruned_at.append(result.epoch)
            raise optuna.TrialPruned(f"pruned at epoch {result.epoch}")

    return on_epoch


TrialCallback = Callable[["optuna.Study", "optuna.trial.FrozenTrial"], None]


def work(
    job: Job, n_trials: int, deadline: float | None = None, on_trial: TrialCallback | None = None
) -> int:
    """Run trials of the shared study until it has `n_trials` finished (complete or
    pruned) trials or the deadline passes; return how many this worker ran.
    `on_trial(study, trial)` is called after each trial this worker ends (to report it).

    Trials of dead workers are failed by heartbeat and re-queued with the same params;
    a waiting retry is taken before any new trial, and the worker that queued a retry
    runs it even when the others have reached the target meanwhile, so no trial is
    left WAITING when the sweep ends.
    """

    study = open_study(job.settings.optuna_storage, job.study, job.params.tune, seed=job.seed)
    objective_fn = objective(job, TrialData(job.settings.root, job.params))
    callbacks = [on_trial] if on_trial is not None else []

    def fn(s: optuna.Study) -> None:
        s.optimize(objective_fn, n_trials=1, catch=(ValueError,), callbacks=callbacks)

    _warm_up(job)
    ran = owed = 0
    while not STOP.is_set() and (deadline is None or time.time() < deadline):
        c = counts(study)
        if c.finished >= n_trials and not (owed and c.waiting):
            break
        if c.fail >= max(n_trials, 10) * (1 + MAX_FAILED_RATIO):
            raise MlopsError(f"study {job.study}: {c.fail} failed trials; see their MLflow runs")
        if c.waiting == 0 and c.finished + c.running >= n_trials:
            # The rest are running elsewhere; a dead worker's trial comes back as a retry.
            owed += fail_stale(study)
            time.sleep(0.5)
            continue
        fn(study)  # takes a waiting trial first
        ran += 1
        owed = max(0, owed - 1)
    return ran + _settle(study, fn, deadline)


def _warm_up(job: Job) -> None:
    """Pay the worker's one-time costs before its first trial starts: importing torch
    (about 2 s) and opening the tracking store. Otherwise they land inside trial 0,
    whose heartbeat and duration they distort."""

    threads = job.threads if job.threads is not None else job.params.train.threads
    seed_everything(job.params.train.seed, threads)
    tracking.connect(job.settings)
    tracking.ensure_experiment(job.params.pipeline.name, job.settings)


def _settle(study: optuna.Study, fn: Callable[[optuna.Study], None], deadline: float | None) -> int:
    """Before leaving, wait for trials still RUNNING to finish or to be failed by
    heartbeat (a dead worker's), so none is left RUNNING when the sweep ends; a retry
    this worker queues meanwhile it runs itself. Return how many trials it ran."""

    ran = 0
    until = time.time() + GRACE_S + 4 * HEARTBEAT_S
    while time.time() < until:
        queued = fail_stale(study)
        if queued and not STOP.is_set() and (deadline is None or time.time() < deadline):
            for _ in range(queued):
                fn(study)
            ran += queued
            continue
        if not counts_running(study):
            break
        time.sleep(0.5)
    return ran


def counts_running(study: optuna.Study) -> int:
    """Trials of the study in state RUNNING."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
