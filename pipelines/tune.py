"""Stage `tune`: an Optuna study over `tune.space`, one training job per trial (pruned
per epoch), every trial a child MLflow run of the stage's run, one line per trial.
Writes the best params for `train` and the study summary as DVC metrics, with the same
keys whether it tuned or not (`best_value` is null then). `tune.n_trials: 0` skips
tuning."""

from __future__ import annotations

import time

from mlops import tracking, workspace
from mlops.errors import UserError
from mlops.io import write_json
from mlops.params import require_space
from mlops.tuning.objective import TAG_STUDY, Job, study_name, work
from mlops.tuning.progress import reporter
from mlops.tuning.service import finalize
from mlops.tuning.storage import counts, open_study
from pipelines._stage import StageContext, run_stage


def tune(ctx: StageContext) -> None:
    """Tune (or skip), then write `reports/best_params.json` and `reports/tune.json`."""
    p = ctx.params.tune
    if p.n_trials == 0:
        write_json(workspace.BEST_PARAMS, {"tuned": False, "values": {}})
        write_json(
            workspace.TUNE_METRICS, {"best_value": None, "complete": 0, "pruned": 0, "failed": 0}
        )
        print("tune: tune.n_trials is 0, train uses params.yaml as it is")
        return
    require_space(p.space, "tune.n_trials > 0")
    name = study_name(ctx.params)
    study = open_study(ctx.settings.optuna_storage, name, p)
    deadline = time.time() + p.timeout if p.timeout else None
    with tracking.stage_run(ctx.settings, ctx.experiment, "tune", None, {TAG_STUDY: name}) as run:
        print(f"tune: study {name}, until it has {p.n_trials} finished trial(s)", flush=True)
        line = reporter("tune: ", p.metric, lambda text: print(text, flush=True))
        work(Job(ctx.settings, ctx.params, name, run), p.n_trials, deadline, line)
        finalize(study, run)
    c = counts(study)
    if c.best is None:
        raise UserError(f"study {name}: no trial completed; see the tune run in MLflow")
    best = study.best_trial
    write_json(
        workspace.BEST_PARAMS,
        {
            "tuned": True,
            "study": name,
            "trial": best.number,
            "value": best.value,
            "values": best.params,
        },
    )
    write_json(
        workspace.TUNE_METRICS,
        {"best_value": c.best, "complete": c.complete, "pruned": c.pruned, "failed": c.fail},
    )
    print(
        f"tune: study {name}, best trial {best.number} "
        f"({p.metric} {c.best:.4f}; {c.complete} complete, {c.pruned} pruned)"
    )


def main() -> None:
    """Entry point of `python -m pipelines.tune`."""
    run_stage("tune", tune)


if __name__ == "__main__":
    main()
