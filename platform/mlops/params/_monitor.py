"""The `monitor:` section of params.yaml: when `mlops monitor drift` declares drift, and
when a monitor schedule (`mlops schedule add NAME --monitor MODEL@STAGE`) retrains.

Read by `mlops monitor` and monitor schedules, never by a DVC stage (no stage lists it
in dvc.yaml). Validated like every other section: a bad value is one line naming the
key, exit code 2.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Share = Annotated[float, Field(ge=0.0, lt=1.0)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


class DriftParams(_Section):
    """Thresholds of the drift verdict (see `mlops.monitoring.drift`).

    A feature drifts when a test finds a shift that is both large and significant: its PSI
    exceeds `psi` and the chi-square test on the same bins rejects equality, or the
    two-sample KS statistic is at least `ks_statistic` and the KS test rejects equality.
    Rejecting means a p-value below `pvalue`, divided by the number of features under
    `bonferroni` (the chance of any false alarm over all features stays `pvalue`). The
    effect sizes keep huge samples from flagging negligible differences; the p-values keep
    small samples, whose PSI is inflated by noise, from flagging nothing but noise. The
    data drifts when more than `max_drifted_share` of the features drift (0: any one), or
    when the predictions' PSI exceeds `prediction_psi` (and is significant).
    """

    bins: Annotated[int, Field(ge=2, le=100)] = 10
    psi: Annotated[float, Field(gt=0.0)] = 0.2
    ks_statistic: Annotated[float, Field(ge=0.0, le=1.0)] = 0.1
    pvalue: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.01
    bonferroni: bool = True
    max_drifted_share: Share = 0.0
    prediction_psi: Annotated[float, Field(gt=0.0)] = 0.2
    min_rows: Annotated[int, Field(ge=2)] = 30


class MonitorParams(_Section):
    """What `mlops monitor` compares against, and when a monitor schedule retrains.

    A monitor schedule's run retrains when the data drifts (`drift`), or when the served
    version's live accuracy over its last `live_window` labelled answers falls below
    `min_live_accuracy` (a regression: its RMSE rises above `max_live_rmse`) once at least
    `min_labelled` answers have labels. After a run that registered a challenger, none
    retrains again for `cooldown` seconds (its triggers are recorded as skipped).
    """

    drift: DriftParams = DriftParams()
    cooldown: Annotated[float, Field(ge=0.0, le=365 * 86400.0)] = 86400.0
    min_live_accuracy: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    max_live_rmse: Annotated[float, Field(gt=0.0)] | None = None
    min_labelled: Annotated[int, Field(ge=1)] = 100
    live_window: Annotated[int, Field(ge=1, le=10_000_000)] = 1000
