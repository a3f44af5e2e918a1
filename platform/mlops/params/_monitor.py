"""The `monitor:` section of params.yaml: when `mlops monitor drift` declares drift.

Read by `mlops monitor`, never by a DVC stage (no stage lists it in dvc.yaml). Validated
like every other section: a bad value is one line naming the key, exit code 2.
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
    """What `mlops monitor` compares against: the drift thresholds."""

    drift: DriftParams = DriftParams()
