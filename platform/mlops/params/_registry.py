"""The `registry:` section of params.yaml: stages, allowed transitions, promotion gates
and who may promote where. Validated like every other section (one line, exit 2)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

NO_STAGE = "none"
STAGE_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"
HIGHER_IS_BETTER = {"accuracy": True, "f1_macro": True, "log_loss": False,
                    "rmse": False, "mae": False, "r2": True}  # fmt: skip

Stage = Annotated[str, Field(pattern=STAGE_PATTERN)]
Actor = Annotated[str, Field(min_length=1, max_length=255)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


class LiveGateParams(_Section):
    """Live evidence a version needs before it enters a stage: at least
    `min_labelled_pairs` rows it scored beside the stage's holder (as a shadow) with a
    label, on which it is right more often, with McNemar's p-value at most `max_p_value`.
    `sink`: the serving sink to read (default MLOPS_HOME/serving/MODEL.db)."""

    min_labelled_pairs: Annotated[int, Field(ge=1)] = 100
    max_p_value: Annotated[float, Field(gt=0, le=1)] = 0.05
    sink: str | None = None


class GateParams(_Section):
    """Gates a version must pass to enter one stage."""

    thresholds: dict[str, float] = {}
    beat_holder_by: float | None = None
    signature: bool = True
    integrity: bool = True
    max_size_mb: Annotated[float, Field(gt=0)] | None = None
    max_latency_ms: Annotated[float, Field(gt=0)] | None = None
    require_export: Literal["onnx", "torchscript"] | None = None
    require_live: LiveGateParams | None = None

    @model_validator(mode="after")
    def _known_metrics(self) -> GateParams:
        for metric in self.thresholds:
            if metric not in HIGHER_IS_BETTER:
                known = ", ".join(HIGHER_IS_BETTER)
                raise ValueError(f"thresholds: unknown metric {metric!r} (known: {known})")
        return self


def _default_gates() -> dict[str, GateParams]:
    return {
        "staging": GateParams(),
        "production": GateParams(thresholds={"accuracy": 0.95}, beat_holder_by=0.0),
    }


class RegistryParams(_Section):
    """Stages in promotion order, the archive stage, transitions, gates, permissions."""

    stages: Annotated[list[Stage], Field(min_length=1)] = ["staging", "production", "archived"]
    archive_stage: Stage | None = "archived"
    replaced_to: Stage = NO_STAGE
    transitions: dict[Stage, list[Stage]] | None = None
    gates: dict[Stage, GateParams] = Field(default_factory=_default_gates)
    permissions: dict[Stage, list[Actor]] = {}

    @model_validator(mode="before")
    @classmethod
    def _default_gates_for_listed_stages(cls, data: Any) -> Any:
        # The default gates name staging and production: keep only those the user lists.
        if isinstance(data, dict) and "gates" not in data and "stages" in data:
            listed = data["stages"] if isinstance(data["stages"], list) else []
            data = data | {"gates": {s: g for s, g in _default_gates().items() if s in listed}}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> RegistryParams:
        if len(set(self.stages)) != len(self.stages):
            raise ValueError("stages: a stage is listed twice")
        if NO_STAGE in self.stages:
            raise ValueError(f"stages: {NO_STAGE!r} is implicit, do not list it")
        known = {NO_STAGE, *self.stages}
        if self.archive_stage is not None and self.archive_stage not in self.stages:
            raise ValueError(f"archive_stage: {self.archive_stage!r} is not in stages")
        exclusive = [s for s in self.stages if s != self.archive_stage]
        if self.replaced_to in exclusive:
            raise ValueError(f"replaced_to: {self.replaced_to!r} is held by one version only")
        if self.replaced_to not in known:
            raise ValueError(f"replaced_to: unknown stage {self.replaced_to!r}")
        for where, names in (
            ("transitions", list((self.transitions or {}).keys())),
            ("transitions", [t for ts in (self.transitions or {}).values() for t in ts]),
            ("gates", list(self.gates)),
            ("permissions", list(self.permissions)),
        ):
            for name in names:
                if name not in known:
                    raise ValueError(f"{where}: unknown stage {name!r}")
        return self

    def allowed_transitions(self) -> dict[str, set[str]]:
        """From-stage → the stages a version may be promoted to from there.

        Default: forward in the listed order (skipping is allowed), any stage to the
        archive stage, and the archive stage back to `none`. Rollback does not use this.
        """
        if self.transitions is not None:
            moves = {s: set(t) for s, t in self.transitions.items()}
            return {s: moves.get(s, set()) for s in (NO_STAGE, *self.stages)}
        order = [s for s in self.stages if s != self.archive_stage]
        moves = {NO_STAGE: set(order)}
        for i, stage in enumerate(order):
            moves[stage] = set(order[i + 1 :])
        if self.archive_stage is not None:
            for stage in (NO_STAGE, *order):
                moves[stage].add(self.archive_stage)
            moves[self.archive_stage] = {NO_STAGE}
        return moves
