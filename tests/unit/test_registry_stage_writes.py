"""The pure parts of a stage change's MLflow side: which writes bring MLflow to a target
(in an order that keeps an undo possible), and what a tracking-store grant allows."""

from __future__ import annotations

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos import databricks_pb2 as codes

from registry.stage_writes import Step, Target, plan
from registry.store_access import OPEN, UNAUTHENTICATED, UNKNOWN, Access, is_refusal

TAG = "mlops.stage"


def test_plan_removes_aliases_first_then_moves_them_then_tags() -> None:
    now = Target({"staging": 2, "production": 1}, {(2, TAG): "staging", (1, TAG): "production"})
    target = Target({"production": 2, "staging": None}, {(2, TAG): "production", (1, TAG): "none"})
    assert plan(now, target) == [
        Step("staging", None, 2, None),
        Step("production", None, 1, 2),
        Step(None, (2, TAG), "staging", "production"),
        Step(None, (1, TAG), "production", "none"),
    ]


def test_plan_writes_nothing_that_is_already_there() -> None:
    same = Target({"production": 2, "staging": None}, {(2, TAG): "production"})
    assert plan(same, same) == []
    half = Target({"production": 2, "staging": 2}, {(2, TAG): "staging"})
    assert plan(half, same) == [
        Step("staging", None, 2, None),
        Step(None, (2, TAG), "staging", "production"),
    ]


def test_steps_describe_themselves() -> None:
    assert Step("production", None, 1, 2).describe() == "alias production v1 → v2"
    assert Step("production", None, None, 2).describe() == "alias production unset → v2"
    assert Step(None, (3, TAG), "none", None).describe() == "v3 tag mlops.stage none → unset"


@pytest.mark.parametrize(
    ("permission", "move", "leave"),
    [
        ("MANAGE", True, True),
        ("EDIT", True, False),
        ("USE", False, False),
        ("READ", False, False),
        ("DENY", False, False),
        ("NO_PERMISSIONS", False, False),
        (UNAUTHENTICATED, False, False),
        (OPEN, True, True),
        (UNKNOWN, True, True),  # tried, and undone if the store refuses
    ],
)
def test_what_a_grant_allows(permission: str, move: bool, leave: bool) -> None:
    access = Access("http://server", "bob", permission)
    assert access.allows(delete=False) is move
    assert access.allows(delete=True) is leave
    assert access.known is (permission != UNKNOWN)


def test_refusals_are_told_from_other_failures() -> None:
    assert is_refusal(MlflowException("no", error_code=codes.PERMISSION_DENIED))
    assert is_refusal(MlflowException("who", error_code=codes.UNAUTHENTICATED))
    assert not is_refusal(MlflowException("gone", error_code=codes.RESOURCE_DOES_NOT_EXIST))
    assert not is_refusal(MlflowException("down", error_code=codes.TEMPORARILY_UNAVAILABLE))
    assert not is_refusal(OSError("connection refused"))
