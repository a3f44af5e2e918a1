"""Model names, versions, stage references and the stage policy: one-line UserErrors."""

from __future__ import annotations

import pytest

from mlops.errors import UserError
from mlops.params import RegistryParams
from registry.stages import Ref, StagePolicy, check_model_name, parse_ref, parse_version


def _raises(fn: object, *args: object) -> UserError:
    assert callable(fn)
    with pytest.raises(UserError) as info:
        fn(*args)
    error = info.value
    assert error.exit_code == 2
    assert "\n" not in str(error)
    return error


@pytest.fixture
def policy() -> StagePolicy:
    return StagePolicy(RegistryParams())


# --- model names ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["m", "digits", "Digits-MLP_v2.1", "a" * 63, "a.b.c", "A-"],
)
def test_good_model_names(name: str) -> None:
    assert check_model_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("a/b", id="slash"),
        pytest.param("../etc", id="dotdot-leading"),
        pytest.param("a..b", id="dotdot-inside"),
        pytest.param("a%2Fb", id="percent"),
        pytest.param("a\x00b", id="nul"),
        pytest.param("", id="empty"),
        pytest.param("1model", id="leading-digit"),
        pytest.param("_model", id="leading-underscore"),
        pytest.param("-model", id="leading-dash"),
        pytest.param("my model", id="space"),
        pytest.param("modèle", id="non-ascii"),
        pytest.param("a" * 64, id="64-chars"),
        pytest.param("a" * 300, id="300-chars"),
    ],
)
def test_bad_model_names(name: str) -> None:
    error = _raises(check_model_name, name)
    text = str(error)
    assert text.startswith("model name ")
    shown = name if len(name) <= 40 else name[:40] + "…"
    assert repr(shown) in text
    assert "at most 63" in text


def test_long_model_name_is_shortened_in_message() -> None:
    text = str(_raises(check_model_name, "b" * 300))
    assert "b" * 40 + "…" in text
    assert "b" * 41 not in text
    assert len(text) < 200


# --- versions ---------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "number"), [("1", 1), ("12", 12), ("999999999", 999999999)])
def test_good_versions(text: str, number: int) -> None:
    assert parse_version(text) == number


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("0", id="zero"),
        pytest.param("-1", id="negative"),
        pytest.param("1.5", id="fraction"),
        pytest.param("abc", id="letters"),
        pytest.param("01", id="leading-zero"),
        pytest.param("", id="empty"),
        pytest.param(" 1", id="leading-space"),
        pytest.param("1 ", id="trailing-space"),
        pytest.param("+1", id="plus"),
        pytest.param("1e3", id="exponent"),
        pytest.param("1_000", id="underscore"),
        pytest.param("\uff11", id="fullwidth-digit"),
        pytest.param("1000000000", id="ten-digits"),
    ],
)
def test_bad_versions(text: str) -> None:
    error = _raises(parse_version, text)
    assert f"version {text!r}" in str(error)
    assert "positive whole number" in str(error)


# --- references -------------------------------------------------------------------------


def test_ref_by_number() -> None:
    ref = parse_ref("3")
    assert ref == Ref(version=3)
    assert ref.stage is None
    assert str(ref) == "3"


def test_ref_by_stage_without_policy() -> None:
    ref = parse_ref("@production")
    assert ref == Ref(stage="production")
    assert ref.version is None
    assert str(ref) == "@production"


def test_ref_by_stage_with_policy(policy: StagePolicy) -> None:
    assert parse_ref("@staging", policy) == Ref(stage="staging")
    assert parse_ref("7", policy) == Ref(version=7)


@pytest.mark.parametrize("text", ["@Prod", "@", "@1st", "@a/b", "@" + "a" * 33])
def test_bad_stage_ref_without_policy(text: str) -> None:
    error = _raises(parse_ref, text)
    assert f"stage {text[1:]!r}" in str(error)


@pytest.mark.parametrize("text", ["0", "v1", "-2", "", "@ 1"])
def test_bad_version_ref(text: str) -> None:
    _raises(parse_ref, text)


def test_archive_stage_is_not_a_ref(policy: StagePolicy) -> None:
    error = _raises(parse_ref, "@archived", policy)
    assert "'archived'" in str(error)
    assert "not held by a single version" in str(error)


def test_none_is_not_a_ref(policy: StagePolicy) -> None:
    error = _raises(parse_ref, "@none", policy)
    assert "'none'" in str(error)


def test_unknown_stage_ref_with_policy(policy: StagePolicy) -> None:
    error = _raises(parse_ref, "@canary", policy)
    assert "'canary'" in str(error)
    assert "staging, production, archived" in str(error)


# --- policy: stages ---------------------------------------------------------------------


def test_exclusive(policy: StagePolicy) -> None:
    assert policy.exclusive("staging")
    assert policy.exclusive("production")
    assert not policy.exclusive("archived")
    assert not policy.exclusive("none")


def test_exclusive_without_archive_stage() -> None:
    policy = StagePolicy(
        RegistryParams(stages=["staging", "archived"], archive_stage=None, gates={})
    )
    assert policy.archive is None
    assert policy.exclusive("archived")
    assert not policy.exclusive("none")


def test_check_stage_known(policy: StagePolicy) -> None:
    for stage in ("none", "staging", "production", "archived"):
        assert policy.check_stage(stage) == stage
    assert policy.check_stage("production", exclusive=True) == "production"


@pytest.mark.parametrize("stage", ["canary", "Production", "", "prod"])
def test_check_stage_unknown(policy: StagePolicy, stage: str) -> None:
    error = _raises(policy.check_stage, stage)
    assert f"stage {stage!r}: unknown" in str(error)
    assert "configured stages: staging, production, archived" in str(error)


@pytest.mark.parametrize("stage", ["archived", "none"])
def test_check_stage_not_exclusive(policy: StagePolicy, stage: str) -> None:
    error = _raises(policy.check_stage, stage, True)
    assert f"stage {stage!r}: is not held by a single version" == str(error)


def test_policy_uses_configured_stages() -> None:
    policy = StagePolicy(
        RegistryParams(stages=["dev", "prod", "attic"], archive_stage="attic", gates={})
    )
    assert policy.stages == ("dev", "prod", "attic")
    assert policy.check_stage("dev") == "dev"
    with pytest.raises(UserError, match="'staging'"):
        policy.check_stage("staging")


# --- policy: moves ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "target"),
    [
        ("none", "staging"),
        ("none", "production"),
        ("none", "archived"),
        ("staging", "production"),
        ("staging", "archived"),
        ("production", "archived"),
        ("archived", "none"),
    ],
)
def test_allowed_moves(policy: StagePolicy, current: str, target: str) -> None:
    policy.check_move(4, current, target)  # does not raise


@pytest.mark.parametrize("stage", ["none", "staging", "production", "archived"])
def test_move_to_stage_already_held(policy: StagePolicy, stage: str) -> None:
    error = _raises(policy.check_move, 4, stage, stage)
    assert str(error) == f"version 4 is already in {stage}"


@pytest.mark.parametrize(
    ("current", "target", "options"),
    [
        ("production", "staging", "archived"),
        ("staging", "none", "archived, production"),
        ("production", "none", "archived"),
        ("archived", "staging", "none"),
        ("archived", "production", "none"),
    ],
)
def test_disallowed_moves(policy: StagePolicy, current: str, target: str, options: str) -> None:
    error = _raises(policy.check_move, 9, current, target)
    text = str(error)
    assert text.startswith(f"version 9: {current} → {target} is not an allowed transition")
    assert text.endswith(f"(from {current}: {options})")


def test_move_to_unknown_stage(policy: StagePolicy) -> None:
    error = _raises(policy.check_move, 2, "staging", "canary")
    assert "'canary'" in str(error)
    assert "unknown" in str(error)


def test_move_from_a_stage_with_no_way_out() -> None:
    policy = StagePolicy(RegistryParams(transitions={"none": ["staging"]}))
    policy.check_move(1, "none", "staging")
    error = _raises(policy.check_move, 1, "staging", "production")
    assert str(error).endswith("(from staging: nowhere)")


def test_explicit_transitions_override_defaults() -> None:
    policy = StagePolicy(
        RegistryParams(transitions={"production": ["staging"], "none": ["staging"]})
    )
    policy.check_move(3, "production", "staging")  # backwards, but configured
    with pytest.raises(UserError, match="not an allowed transition"):
        policy.check_move(3, "none", "production")  # skipping, but not configured
