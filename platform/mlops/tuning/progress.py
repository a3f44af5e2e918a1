"""What a sweep shows while it runs: one line per finished trial (number, state, value,
the best so far, seconds) for logs, the tune stage and `mlops sweep worker`; for
`mlops sweep run` a progress bar on a terminal, those lines when stderr is not one."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mlops import console
from mlops.tuning.storage import counts

if TYPE_CHECKING:
    import optuna

Best = tuple[int, float] | None  # (trial number, value) of the best complete trial
POLL_S = 0.5


def trial_line(trial: Any, best: Best, metric: str) -> str:
    """`trial 12 COMPLETE: val_accuracy 0.9815; best 0.9852 (trial 9); 4.3 s`."""
    state = trial.state.name
    if state == "COMPLETE" and trial.value is not None:
        what = f"{metric} {trial.value:.4f}"
    elif state == "PRUNED":
        steps = list(trial.intermediate_values)
        what = f"pruned at epoch {max(steps)}" if steps else "pruned"
    else:
        what = "failed" if state == "FAIL" else state.lower()
    best_text = "best —" if best is None else f"best {best[1]:.4f} (trial {best[0]})"
    seconds = trial.duration.total_seconds() if trial.duration is not None else 0.0
    return f"trial {trial.number} {state}: {what}; {best_text}; {seconds:.1f} s"


def study_best(study: optuna.Study) -> Best:
    """The best complete trial of the study so far, if any."""
    try:
        best = study.best_trial
    except ValueError:
        return None
    return (best.number, float(best.value)) if best.value is not None else None


def reporter(
    prefix: str, metric: str, write: Callable[[str], None]
) -> Callable[[optuna.Study, Any], None]:
    """An Optuna callback that writes one line per trial the worker ends."""

    def report(study: optuna.Study, trial: Any) -> None:
        write(f"{prefix}{trial_line(trial, study_best(study), metric)}")

    return report


def log_line(text: str) -> None:
    """A plain line on stderr (no markup, never wrapped): progress in logs."""
    console.err.print(text, markup=False, highlight=False, soft_wrap=True)


def watch(
    study: optuna.Study,
    before: int,
    n_trials: int,
    procs: Sequence[subprocess.Popen[bytes]],
    metric: str,
) -> None:
    """Show a sweep's progress until its worker processes have all ended: a bar on a
    terminal, else one line per finished trial (any worker's)."""
    if console.err.is_terminal:
        _bar(study, before, n_trials, procs)
    else:
        _lines(study, n_trials, procs, metric)


def _bar(
    study: optuna.Study, before: int, n_trials: int, procs: Sequence[subprocess.Popen[bytes]]
) -> None:
    columns = (
        TextColumn("[bold]sweep"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[states]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console.err, transient=False) as bar:
        task = bar.add_task("trials", total=n_trials, states="")
        while True:
            c = counts(study)
            best = "—" if c.best is None else f"{c.best:.4f}"
            states = (
                f"complete {c.complete} · pruned {c.pruned} · failed {c.fail} · "
                f"running {c.running} · best {best}"
            )
            bar.update(task, completed=min(c.finished - before, n_trials), states=states)
            if all(p.poll() is not None for p in procs):
                break
            time.sleep(POLL_S)


def _ended(study: optuna.Study) -> list[Any]:
    from optuna.trial import TrialState

    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return sorted(study.get_trials(deepcopy=False, states=states), key=lambda t: t.number)


def _lines(
    study: optuna.Study,
    n_trials: int,
    procs: Sequence[subprocess.Popen[bytes]],
    metric: str,
) -> None:
    maximize = study.direction.name == "MAXIMIZE"
    seen: set[int] = set()
    best: Best = None

    def take(trial: Any) -> Best:
        if trial.state.name != "COMPLETE" or trial.value is None:
            return best
        if best is None or (trial.value > best[1] if maximize else trial.value < best[1]):
            return (trial.number, float(trial.value))
        return best

    for t in _ended(study):  # what the study held before this sweep
        seen.add(t.number)
        best = take(t)
    last = None
    new = 0  # finished trials of this sweep
    while True:
        done = all(p.poll() is not None for p in procs)
        c = counts(study)
        if (c.finished, c.fail) != last:
            last = (c.finished, c.fail)
            for t in _ended(study):
                if t.number in seen:
                    continue
                seen.add(t.number)
                best = take(t)
                new += t.state.name != "FAIL"
                log_line(f"sweep: {trial_line(t, best, metric)}; {new}/{n_trials}")
        if done:
            return
        time.sleep(POLL_S)
