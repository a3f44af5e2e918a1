"""Fine-tuning from a registered version: the layer groups of each family, what must match
the parent, the head replaced for a new class set, frozen groups left as they were."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest
import torch

from mlops.errors import UserError
from mlops.models import ModelSpec, build_model, make_spec
from mlops.nets import layer_groups
from mlops.optim import make_optimizer
from mlops.params import ModelParams, TrainParams
from registry.finetune import Parent, fit, head_kept, starter

SHAPE = [1, 8, 8]


def _spec(family: str = "cnn", classes: list[int] | None = None, **hyper: object) -> ModelSpec:
    params = ModelParams.model_validate({"family": family, family: hyper})
    n = math.prod(SHAPE)
    return make_spec(params, classes or [0, 1, 2], [0.1] * n, [2.0] * n, SHAPE)


def _parent(spec: ModelSpec) -> Parent:
    torch.manual_seed(1)
    state = {k: v.clone() for k, v in build_model(spec).state_dict().items()}
    return Parent("digits@1", "digits", 1, "ab" * 32, spec, state)


@pytest.mark.parametrize(
    ("family", "groups"),
    [
        ("mlp", {"hidden.0", "hidden.1", "head"}),
        ("cnn", {"conv.0", "conv.1", "fc", "head"}),
        ("rnn", {"rnn", "head"}),
        ("transformer", {"embed", "encoder.0", "encoder.1", "norm", "head"}),
    ],
)
def test_every_family_has_its_layer_groups(family: str, groups: set[str]) -> None:
    found = layer_groups(build_model(_spec(family)))
    assert set(found) == groups
    named = {n for n, _ in build_model(_spec(family)).named_parameters()}
    assert {n for names in found.values() for n in names} == named  # every parameter, once


def test_the_head_is_replaced_for_a_new_class_set_and_the_body_frozen() -> None:
    parent = _parent(_spec("cnn", [0, 1, 2]))
    child = fit(parent, _spec("cnn", [0, 1]))
    assert not head_kept(parent, child)
    torch.manual_seed(2)
    model = starter(parent, child, ["body"])(build_model(child))
    groups = layer_groups(model)
    state = model.state_dict()
    for name in groups["conv.0"] + groups["fc"]:
        assert torch.equal(state[name], parent.state[name]), name
    head = groups["head"]
    assert state[head[0]].shape[0] == 2  # a fresh head of two outputs
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(head)
    optimizer = make_optimizer(model, TrainParams())
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(head)


def test_the_same_classes_keep_the_head_and_the_parents_normalisation() -> None:
    parent = _parent(dataclasses.replace(_spec("mlp"), mean=[0.5] * 64))
    child = fit(parent, _spec("mlp"))
    assert head_kept(parent, child) and child.mean == [0.5] * 64
    model = starter(parent, child, [])(build_model(child))
    for key, value in model.state_dict().items():
        assert torch.equal(value, parent.state[key]), key


@pytest.mark.parametrize(
    ("child", "message"),
    [
        (_spec("mlp"), "digits version 1 is a cnn, train.model.family is mlp"),
        (
            _spec("cnn", channels=[8, 16]),
            "digits version 1 has other cnn hyperparameters: channels [32, 64] (here [8, 16])",
        ),
    ],
)
def test_a_network_that_differs_is_refused(child: ModelSpec, message: str) -> None:
    with pytest.raises(UserError, match=re.escape(f"train.init_from = digits@1: {message}")):
        fit(_parent(_spec("cnn")), child)


def test_an_unknown_group_is_named() -> None:
    parent = _parent(_spec("rnn"))
    with pytest.raises(UserError, match=re.escape("no layer group 'conv.0' in a rnn")):
        starter(parent, parent.spec, ["conv.0"])(build_model(parent.spec))
