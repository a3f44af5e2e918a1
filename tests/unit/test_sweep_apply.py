"""`mlops sweep apply`'s rewrite of params.yaml: only the searched values and one comment
line change; the result reads back as valid params with exactly those values."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from mlops.params import load_params
from mlops.tuning.apply import MARK, _plain, rewrite

ROOT = Path(__file__).resolve().parents[2]
VALUES = {
    "learning_rate": 0.0023456789,
    "weight_decay": 1e-05,  # repr "1e-05": no dot, which older YAML readers take as a string
    "batch_size": 128,
    "model.mlp.dropout": 0.31234,
    "model.mlp.activation": "gelu",
}


def _changed(before: str, after: str) -> tuple[list[str], list[str]]:
    diff = list(difflib.ndiff(before.splitlines(), after.splitlines()))
    return [d[2:] for d in diff if d.startswith("- ")], [d[2:] for d in diff if d.startswith("+ ")]


def test_only_the_values_and_one_comment_change(tmp_path: Path) -> None:
    before = (ROOT / "params.yaml").read_text()
    after = rewrite(before, VALUES, "study digits-x, trial 3 (val_accuracy 0.9815)")
    removed, added = _changed(before, after)
    assert removed == [
        "  batch_size: 64",
        "  learning_rate: 1.0e-3",
        "  weight_decay: 1.0e-4",
        "      activation: relu      # relu | gelu | tanh | silu",
        "      dropout: 0.1",
    ]
    assert added == [
        f"{MARK} study digits-x, trial 3 (val_accuracy 0.9815)",
        "  batch_size: 128",
        "  learning_rate: 0.0023456789",
        "  weight_decay: 1.0e-05",
        "      activation: gelu      # relu | gelu | tanh | silu",
        "      dropout: 0.31234",
    ]
    assert after.splitlines()[after.splitlines().index("train:") - 1].startswith(MARK)
    path = tmp_path / "params.yaml"
    path.write_text(after)
    train = load_params(path).train
    assert train.learning_rate == 0.0023456789 and train.weight_decay == 1e-05
    assert train.batch_size == 128
    assert train.model.mlp.dropout == 0.31234 and train.model.mlp.activation == "gelu"


def test_applying_again_replaces_the_comment() -> None:
    before = (ROOT / "params.yaml").read_text()
    once = rewrite(before, VALUES, "study a, trial 1 (val_accuracy 0.9)")
    twice = rewrite(once, {"learning_rate": 0.005}, "study a, trial 7 (val_accuracy 0.95)")
    marks = [line for line in twice.splitlines() if line.startswith(MARK)]
    assert marks == [f"{MARK} study a, trial 7 (val_accuracy 0.95)"]
    removed, added = _changed(once, twice)
    assert len(removed) == len(added) == 2


def test_a_train_param_left_at_its_default_is_added(tmp_path: Path) -> None:
    text = "\n# my project\npipeline:\n  name: p\ntrain:\n  epochs: 3  # short\n"
    after = rewrite(text, {"learning_rate": 0.01, "model.mlp.dropout": 0.2}, "study s, trial 0")
    assert after.startswith("\n# my project\n")
    assert "  epochs: 3  # short\n" in after
    path = tmp_path / "params.yaml"
    path.write_text(after)
    train = load_params(path).train
    assert train.learning_rate == 0.01 and train.model.mlp.dropout == 0.2 and train.epochs == 3


@pytest.mark.parametrize("value", [1e-7, 2.5e-10, 0.1, 3.0, 9.999999999999999])
def test_floats_read_back_as_the_same_float(tmp_path: Path, value: float) -> None:
    after = rewrite("train:\n  learning_rate: 0.001\n", {"learning_rate": value}, "s")
    path = tmp_path / "params.yaml"
    path.write_text(after)
    assert load_params(path).train.learning_rate == value


def test_a_hostile_study_name_cannot_add_yaml(tmp_path: Path) -> None:
    """The comment is built from a study's name, which anyone with the storage can pick."""

    name = "x\nregister:\n  model_name: evil\r\u2028"
    after = rewrite("train:\n  epochs: 3\n", {"learning_rate": 0.01}, f"study {_plain(name)}")
    path = tmp_path / "params.yaml"
    path.write_text(after)
    params = load_params(path)
    assert params.register_.model_name is None
    assert len(after.splitlines()) == 4, after


def test_searched_data_params_land_in_the_data_section(tmp_path: Path) -> None:
    text = (
        "data:\n  source: t.csv  # mine\n  target: y\n  tokenizer:\n    max_length: 64\n"
        "train:\n  epochs: 3\n"
    )
    values = {
        "learning_rate": 0.01,
        "data.tokenizer.vocab_size": 1200,
        "data.tokenizer.max_length": 32,
        "data.one_hot_max": 4,
    }
    after = rewrite(text, values, "study s, trial 2")
    assert "  source: t.csv  # mine\n" in after
    path = tmp_path / "params.yaml"
    path.write_text(after)
    params = load_params(path)
    assert params.train.learning_rate == 0.01 and "data" not in params.train.model_dump()
    assert params.data.tokenizer.vocab_size == 1200 and params.data.tokenizer.max_length == 32
    assert params.data.one_hot_max == 4 and params.data.source == "t.csv"
