"""The `registry:` section of params.yaml: defaults, transitions, gates and one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from mlops.errors import UserError
from mlops.params import (
    HIGHER_IS_BETTER,
    NO_STAGE,
    GateParams,
    Params,
    RegistryParams,
    load_params,
    parse_params,
)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _one_line(error: UserError, source: str) -> str:
    text = str(error)
    assert error.exit_code == 2
    assert "\n" not in text and "\r" not in text
    assert text.startswith(f"{source}: ")
    return text


# --- defaults -----------------------------------------------------------------------


def test_defaults() -> None:
    params = RegistryParams()
    assert params.stages == ["staging", "production", "archived"]
    assert params.archive_stage == "archived"
    assert params.replaced_to == NO_STAGE
    assert params.transitions is None
    assert params.permissions == {}
    assert set(params.gates) == {"staging", "production"}
    assert params.gates["staging"] == GateParams()
    assert params.gates["production"].thresholds == {"accuracy": 0.95}
    assert params.gates["production"].beat_holder_by == 0.0


def test_default_gates_are_not_shared_between_instances() -> None:
    a, b = RegistryParams(), RegistryParams()
    assert a.gates == b.gates
    assert a.gates is not b.gates


def test_gate_defaults() -> None:
    gate = GateParams()
    assert gate.thresholds == {}
    assert gate.beat_holder_by is None
    assert gate.signature is True
    assert gate.integrity is True
    assert gate.max_size_mb is None
    assert gate.max_latency_ms is None


def test_higher_is_better_directions() -> None:
    assert {m for m, up in HIGHER_IS_BETTER.items() if up} == {"accuracy", "f1_macro", "r2"}
    assert {m for m, up in HIGHER_IS_BETTER.items() if not up} == {"log_loss", "rmse", "mae"}


def test_params_default_registry_section() -> None:
    assert parse_params({}).registry == RegistryParams()
    assert parse_params({"registry": None}).registry == RegistryParams()


def test_params_frozen() -> None:
    params = RegistryParams()
    with pytest.raises(ValidationError):
        params.stages = ["x"]  # type: ignore[misc]


# --- allowed transitions --------------------------------------------------------------


def test_allowed_transitions_default() -> None:
    assert RegistryParams().allowed_transitions() == {
        "none": {"staging", "production", "archived"},
        "staging": {"production", "archived"},
        "production": {"archived"},
        "archived": {"none"},
    }


def test_allowed_transitions_forward_only_with_skips() -> None:
    params = RegistryParams(stages=["dev", "qa", "prod", "attic"], archive_stage="attic", gates={})
    moves = params.allowed_transitions()
    assert moves["none"] == {"dev", "qa", "prod", "attic"}
    assert moves["dev"] == {"qa", "prod", "attic"}
    assert moves["qa"] == {"prod", "attic"}
    assert moves["prod"] == {"attic"}
    assert moves["attic"] == {"none"}
    # never backwards
    assert "dev" not in moves["qa"]
    assert "qa" not in moves["prod"]


def test_allowed_transitions_without_archive_stage() -> None:
    params = RegistryParams(stages=["staging", "production"], archive_stage=None)
    assert params.allowed_transitions() == {
        "none": {"staging", "production"},
        "staging": {"production"},
        "production": set(),
    }


def test_allowed_transitions_explicit_table() -> None:
    params = RegistryParams(
        transitions={"none": ["staging"], "staging": ["production", "none"]},
    )
    assert params.allowed_transitions() == {
        "none": {"staging"},
        "staging": {"production", "none"},
        # stages absent from the table go nowhere
        "production": set(),
        "archived": set(),
    }


def test_allowed_transitions_returns_fresh_sets() -> None:
    params = RegistryParams()
    params.allowed_transitions()["staging"].add("none")
    assert "none" not in params.allowed_transitions()["staging"]


# --- valid custom sections --------------------------------------------------------------


def test_replaced_to_archive_stage_is_allowed() -> None:
    params = RegistryParams(replaced_to="archived")
    assert params.replaced_to == "archived"


def test_custom_gates_and_permissions() -> None:
    params = RegistryParams(
        gates={
            "production": GateParams(
                thresholds={"rmse": 0.5, "r2": 0.8},
                beat_holder_by=0.01,
                max_size_mb=10,
                max_latency_ms=2.5,
                signature=False,
                integrity=False,
            )
        },
        permissions={"production": ["alice", "ci-bot"], NO_STAGE: ["bob"]},
    )
    gate = params.gates["production"]
    assert gate.thresholds == {"rmse": 0.5, "r2": 0.8}
    assert gate.max_size_mb == 10.0
    assert params.permissions["production"] == ["alice", "ci-bot"]
    assert "staging" not in params.gates


def test_registry_section_from_yaml(tmp_path: Path) -> None:
    text = (
        "registry:\n"
        "  stages: [dev, prod, attic]\n"
        "  archive_stage: attic\n"
        "  gates:\n"
        "    prod:\n"
        "      thresholds: {log_loss: 0.3, accuracy: 0.9}\n"
        "      beat_holder_by: 0.001\n"
        "      max_latency_ms: 5\n"
        "  permissions:\n"
        "    prod: [alice]\n"
    )
    params = load_params(_write(tmp_path, text))
    reg = params.registry
    assert reg.stages == ["dev", "prod", "attic"]
    assert reg.archive_stage == "attic"
    assert reg.gates["prod"].thresholds == {"log_loss": 0.3, "accuracy": 0.9}
    assert reg.gates["prod"].max_latency_ms == 5.0
    assert reg.permissions == {"prod": ["alice"]}
    assert reg.allowed_transitions()["dev"] == {"prod", "attic"}
    # round-trips through as_dict
    assert parse_params(params.as_dict()) == params


def test_null_archive_stage_from_yaml(tmp_path: Path) -> None:
    text = "registry:\n  stages: [staging, production]\n  archive_stage: null\n"
    reg = load_params(_write(tmp_path, text)).registry
    assert reg.archive_stage is None
    assert reg.allowed_transitions()["production"] == set()


# --- bad sections: one line naming the key -----------------------------------------------

# (id, registry section, fragments the one-line message must contain)
BAD_REGISTRY: list[tuple[str, dict[str, Any], list[str]]] = [
    ("no-stages", {"stages": []}, ["registry.stages", "at least 1"]),
    ("stages-scalar", {"stages": "staging"}, ["registry.stages", "'staging'"]),
    ("stage-twice", {"stages": ["staging", "staging"]}, ["registry", "stages", "twice"]),
    ("none-listed", {"stages": ["none", "prod"]}, ["registry", "stages", "'none'"]),
    ("stage-uppercase", {"stages": ["Prod"]}, ["registry.stages[0]", "'Prod'"]),
    ("stage-digit", {"stages": ["ok", "1prod"]}, ["registry.stages[1]", "'1prod'"]),
    ("stage-too-long", {"stages": ["a" * 33]}, ["registry.stages[0]", "'aaaa"]),
    ("archive-unknown", {"archive_stage": "attic"}, ["archive_stage", "'attic'", "not in"]),
    ("replaced-to-exclusive", {"replaced_to": "production"}, ["replaced_to", "'production'"]),
    ("replaced-to-unknown", {"replaced_to": "attic"}, ["replaced_to", "'attic'", "unknown"]),
    (
        "replaced-to-no-archive",
        {"archive_stage": None, "replaced_to": "archived"},
        ["replaced_to", "'archived'"],
    ),
    ("transition-from-unknown", {"transitions": {"qa": ["staging"]}}, ["transitions", "'qa'"]),
    ("transition-to-unknown", {"transitions": {"staging": ["qa"]}}, ["transitions", "'qa'"]),
    ("transition-bad-name", {"transitions": {"Bad": []}}, ["registry.transitions", "'Bad'"]),
    ("gate-unknown-stage", {"gates": {"qa": {}}}, ["gates", "unknown stage 'qa'"]),
    ("permission-unknown-stage", {"permissions": {"qa": ["bob"]}}, ["permissions", "'qa'"]),
    ("permission-empty-actor", {"permissions": {"staging": [""]}}, ["permissions.staging[0]"]),
    (
        "permission-actor-too-long",
        {"permissions": {"staging": ["x" * 256]}},
        ["registry.permissions.staging[0]"],
    ),
    ("permission-not-list", {"permissions": {"staging": "bob"}}, ["permissions.staging", "'bob'"]),
    (
        "unknown-metric",
        {"gates": {"staging": {"thresholds": {"precision": 0.5}}}},
        ["registry.gates.staging", "unknown metric 'precision'", "accuracy"],
    ),
    (
        "threshold-nan",
        {"gates": {"staging": {"thresholds": {"accuracy": float("nan")}}}},
        ["registry.gates.staging.thresholds.accuracy", "nan", "finite"],
    ),
    (
        "threshold-string",
        {"gates": {"staging": {"thresholds": {"accuracy": "0.9"}}}},
        ["registry.gates.staging.thresholds.accuracy", "'0.9'"],
    ),
    (
        "beat-inf",
        {"gates": {"staging": {"beat_holder_by": float("inf")}}},
        ["registry.gates.staging.beat_holder_by", "finite"],
    ),
    (
        "size-zero",
        {"gates": {"staging": {"max_size_mb": 0}}},
        ["registry.gates.staging.max_size_mb", "= 0", "greater than 0"],
    ),
    (
        "latency-negative",
        {"gates": {"production": {"max_latency_ms": -1}}},
        ["registry.gates.production.max_latency_ms", "-1"],
    ),
    (
        "signature-string",
        {"gates": {"staging": {"signature": "yes"}}},
        ["registry.gates.staging.signature", "'yes'"],
    ),
    (
        "integrity-int",
        {"gates": {"staging": {"integrity": 1}}},
        ["registry.gates.staging.integrity", "1"],
    ),
    (
        "export-unknown-format",
        {"gates": {"production": {"require_export": "tflite"}}},
        ["registry.gates.production.require_export", "'tflite'", "'onnx' or 'torchscript'"],
    ),
    ("gate-unknown-key", {"gates": {"staging": {"bogus": 1}}}, ["gates.staging.bogus", "unknown"]),
    ("unknown-key", {"stage": ["x"]}, ["registry.stage", "unknown key"]),
]


@pytest.mark.parametrize(
    ("section", "fragments"),
    [pytest.param(s, f, id=i) for i, s, f in BAD_REGISTRY],
)
def test_bad_registry_section_parse(section: dict[str, Any], fragments: list[str]) -> None:
    with pytest.raises(UserError) as info:
        parse_params({"registry": section}, source="p.yaml")
    text = _one_line(info.value, "p.yaml")
    for fragment in fragments:
        assert fragment in text, (fragment, text)


@pytest.mark.parametrize(
    ("section", "fragments"),
    [pytest.param(s, f, id=i) for i, s, f in BAD_REGISTRY],
)
def test_bad_registry_section_model(section: dict[str, Any], fragments: list[str]) -> None:
    # The model itself refuses the same input (not only the params.yaml reader).
    with pytest.raises(ValidationError):
        Params.model_validate({"registry": section})


BAD_YAML: list[tuple[str, str, list[str]]] = [
    ("scalar-section", "registry: 5\n", ["registry", "5"]),
    (
        "unknown-metric",
        "registry:\n  gates:\n    production:\n      thresholds:\n        auc: 0.9\n",
        ["registry.gates.production", "unknown metric 'auc'"],
    ),
    (
        "nan-threshold",
        "registry:\n  gates:\n    staging:\n      thresholds: {rmse: .nan}\n",
        ["registry.gates.staging.thresholds.rmse", "nan", "finite"],
    ),
    (
        "yes-is-a-string",
        "registry:\n  gates:\n    staging:\n      integrity: yes\n",
        ["registry.gates.staging.integrity", "'yes'"],
    ),
    ("gate-for-unknown-stage", "registry:\n  gates:\n    qa: {}\n", ["registry", "'qa'"]),
    (
        "duplicate-stage",
        "registry:\n  stages: [staging, production, staging]\n",
        ["registry", "stages", "twice"],
    ),
    ("unknown-key", "registry:\n  stagez: [a]\n", ["registry.stagez", "unknown key"]),
    (
        "duplicate-yaml-key",
        "registry:\n  gates:\n    staging: {}\n    staging: {}\n",
        ["duplicate key 'staging'"],
    ),
]


@pytest.mark.parametrize(
    ("text", "fragments"),
    [pytest.param(t, f, id=i) for i, t, f in BAD_YAML],
)
def test_bad_registry_section_load(tmp_path: Path, text: str, fragments: list[str]) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(UserError) as info:
        load_params(path)
    message = _one_line(info.value, str(path))
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_several_errors_are_counted() -> None:
    with pytest.raises(UserError) as info:
        parse_params(
            {"registry": {"stages": ["Bad", "1bad"], "permissions": {"staging": [""]}}},
            source="p.yaml",
        )
    text = _one_line(info.value, "p.yaml")
    assert "registry.stages[0]" in text
    assert "(and 2 more)" in text
