"""params.yaml → Params: every bad input is one UserError line naming file, key and value."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from mlops.errors import UserError
from mlops.params import (
    CNNParams,
    EarlyStoppingParams,
    EvaluateParams,
    ImageParams,
    MLPParams,
    ModelParams,
    Params,
    RNNParams,
    ScheduleParams,
    TrainParams,
    TransformerParams,
    load_params,
    parse_params,
)

REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def _write(tmp_path: Path, text: str, name: str = "params.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _load_error(path: Path) -> UserError:
    with pytest.raises(UserError) as info:
        load_params(path)
    return info.value


def _assert_one_line_from(error: UserError, path: Path) -> str:
    text = str(error)
    assert error.exit_code == 2
    assert "\n" not in text and "\r" not in text
    assert len(text.splitlines()) == 1
    assert text.startswith(f"{path}:")
    return text


# (id, YAML text, fragments the one-line message must contain)
BAD_PARAMS: list[tuple[str, str, list[str]]] = [
    ("str-for-int", "train:\n  epochs: five\n", ["train.epochs", "'five'"]),
    ("quoted-int", "train:\n  epochs: '5'\n", ["train.epochs", "'5'"]),
    ("bool-for-int", "train:\n  epochs: true\n", ["train.epochs", "true"]),
    ("float-for-int", "train:\n  batch_size: 32.0\n", ["train.batch_size", "32.0"]),
    ("list-for-str", "data:\n  source: [a, b]\n", ["data.source", "[a, b]"]),
    ("int-for-str", "data:\n  target: 5\n", ["data.target", "5"]),
    ("bool-for-name", "pipeline:\n  name: true\n", ["pipeline.name", "true"]),
    (
        "str-for-bool",
        "train:\n  model:\n    mlp:\n      batch_norm: maybe\n",
        ["train.model.mlp.batch_norm", "'maybe'"],
    ),
    (
        "str-for-list",
        "train:\n  model:\n    mlp:\n      hidden_sizes: '256'\n",
        ["train.model.mlp.hidden_sizes", "'256'"],
    ),
    ("scalar-section", "train: 5\n", ["train", "5"]),
    ("unknown-top-key", "foo: 1\n", ["foo", "unknown key"]),
    ("unknown-nested-key", "train:\n  model:\n    foo: 1\n", ["train.model.foo", "unknown key"]),
    ("unknown-train-key", "train:\n  epoch: 3\n", ["train.epoch", "unknown key"]),
    ("unknown-aliased-section-key", "validate:\n  foo: 1\n", ["validate.foo", "unknown key"]),
    ("negative-lr", "train:\n  learning_rate: -0.1\n", ["train.learning_rate", "-0.1"]),
    ("zero-lr", "train:\n  learning_rate: 0.0\n", ["train.learning_rate", "0.0"]),
    (
        "dropout-one",
        "train:\n  model:\n    mlp:\n      dropout: 1.0\n",
        ["train.model.mlp.dropout", "1.0"],
    ),
    ("epochs-zero", "train:\n  epochs: 0\n", ["train.epochs", "= 0"]),
    (
        "hidden-size-zero",
        "train:\n  model:\n    mlp:\n      hidden_sizes: [0]\n",
        ["train.model.mlp.hidden_sizes[0]", "= 0"],
    ),
    ("negative-seed", "split:\n  seed: -1\n", ["split.seed", "-1"]),
    ("seed-too-big", "train:\n  seed: 99999999999\n", ["train.seed", "99999999999"]),
    ("max-rows-small", "data:\n  max_rows: 5\n", ["data.max_rows", "5"]),
    ("fraction-one", "split:\n  val_fraction: 1.0\n", ["split.val_fraction", "1.0"]),
    ("nan", "train:\n  learning_rate: .nan\n", ["train.learning_rate", "nan", "finite"]),
    ("inf", "train:\n  learning_rate: .inf\n", ["train.learning_rate", "inf", "finite"]),
    ("minus-inf", "train:\n  weight_decay: -.inf\n", ["train.weight_decay", "inf", "finite"]),
    ("overflow-to-inf", "train:\n  learning_rate: 1e400\n", ["train.learning_rate", "finite"]),
    (
        "fractions-sum",
        "split:\n  val_fraction: 0.45\n  test_fraction: 0.45\n",
        ["split", "val_fraction + test_fraction", "0.9"],
    ),
    (
        "fractions-sum-over",
        "split:\n  val_fraction: 0.5\n  test_fraction: 0.45\n",
        ["split", "val_fraction + test_fraction", "0.95"],
    ),
    ("builtin-mnist", "data:\n  source: builtin:mnist\n", ["data.source", "'builtin:mnist'"]),
    ("txt-source", "data:\n  source: x.txt\n", ["data.source", "'x.txt'"]),
    ("empty-source", "data:\n  source: ''\n", ["data.source", "''"]),
    ("bad-pipeline-name", "pipeline:\n  name: 1bad name\n", ["pipeline.name", "'1bad name'"]),
    ("pipeline-name-slash", "pipeline:\n  name: a/b\n", ["pipeline.name", "'a/b'"]),
    ("bad-model-name", "register:\n  model_name: -x\n", ["register.model_name", "'-x'"]),
    (
        "bad-activation",
        "train:\n  model:\n    mlp:\n      activation: sigmoid\n",
        ["train.model.mlp.activation", "'sigmoid'"],
    ),
    ("bad-optimizer", "train:\n  optimizer: lbfgs\n", ["train.optimizer", "'lbfgs'"]),
    ("bad-family", "train:\n  model:\n    family: resnet\n", ["train.model.family", "'resnet'"]),
    (
        "mlp-key-at-model-level",
        "train:\n  model:\n    hidden_sizes: [8]\n",
        ["train.model.hidden_sizes", "unknown key"],
    ),
    (
        "family-key-in-mlp-section",
        "train:\n  model:\n    mlp:\n      family: mlp\n",
        ["train.model.mlp.family", "unknown key"],
    ),
    (
        "empty-hidden-sizes",
        "train:\n  model:\n    mlp:\n      hidden_sizes: []\n",
        ["train.model.mlp.hidden_sizes", "[]"],
    ),
    ("old-patience-key", "train:\n  patience: 3\n", ["train.patience", "unknown key"]),
    (
        "negative-patience",
        "train:\n  early_stopping:\n    patience: -1\n",
        ["train.early_stopping.patience", "-1"],
    ),
    (
        "cnn-channels-zero",
        "train:\n  model:\n    cnn:\n      channels: [0]\n",
        ["train.model.cnn.channels[0]", "= 0"],
    ),
    (
        "rnn-cell-vanilla",
        "train:\n  model:\n    rnn:\n      cell: vanilla\n",
        ["train.model.rnn.cell", "'vanilla'"],
    ),
    (
        "transformer-heads-do-not-divide-width",
        "train:\n  model:\n    transformer:\n      d_model: 30\n      n_heads: 4\n",
        ["train.model.transformer", "d_model = 30", "n_heads = 4"],
    ),
    (
        "schedule-linear",
        "train:\n  schedule:\n    name: linear\n",
        ["train.schedule.name", "'linear'"],
    ),
    (
        "early-stopping-metric-mape",
        "train:\n  early_stopping:\n    metric: val_mape\n",
        ["train.early_stopping.metric", "'val_mape'"],
    ),
    ("negative-grad-clip", "train:\n  grad_clip: -1.0\n", ["train.grad_clip", "-1.0"]),
    ("label-smoothing-one", "train:\n  label_smoothing: 1.0\n", ["train.label_smoothing", "1.0"]),
    ("precision-fp8", "train:\n  precision: fp8\n", ["train.precision", "'fp8'"]),
    ("device-tpu", "train:\n  device: tpu\n", ["train.device", "'tpu'"]),
    ("bad-metric", "evaluate:\n  primary_metric: auc\n", ["evaluate.primary_metric", "'auc'"]),
    (
        "unclosed-bracket",
        "train:\n  model:\n    mlp:\n      hidden_sizes: [1, 2\n",
        ["invalid YAML", "line "],
    ),
    ("tab-indent", "train:\n\tepochs: 5\n", ["invalid YAML", "line 2"]),
    ("duplicate-key", "train:\n  epochs: 5\n  epochs: 6\n", ["duplicate key", "epochs", "line 3"]),
    (
        "duplicate-nested-key",
        "train:\n  model:\n    mlp:\n      dropout: 0.1\n      dropout: 0.2\n",
        ["duplicate key", "dropout"],
    ),
    ("duplicate-section", "train: {}\ntrain: {}\n", ["duplicate key", "train"]),
    ("top-level-list", "- a\n- b\n", ["expected a mapping", "list"]),
    ("top-level-scalar", "hello\n", ["expected a mapping", "str"]),
    (
        "image-with-input-shape",
        "data:\n  source: data/external/photos\n  input_shape: [1, 8, 8]\n",
        ["data: input_shape", "an image source takes its shape from data.image"],
    ),
    (
        "image-settings-for-numbers",
        "data:\n  source: my.csv\n  image: {size: [32, 32]}\n",
        ["data: image", "needs an image source"],
    ),
    (
        "image-column-of-a-folder",
        "data:\n  source: photos\n  image_column: path\n",
        ["data: image_column", "a folder source has no columns"],
    ),
    (
        "image-channels-4",
        "data:\n  source: photos\n  image: {channels: 4}\n",
        ["data.image.channels", "4"],
    ),
    (
        "image-side-2",
        "data:\n  source: photos\n  image: {size: [2, 32]}\n",
        ["data.image.size[0] = 2"],
    ),
    (
        "init-from-without-a-version",
        "train:\n  init_from: shapes\n",
        ["train.init_from = 'shapes'", "expected MODEL@STAGE or MODEL@VERSION"],
    ),
    ("freeze-unknown", "train:\n  freeze: [layer9]\n", ["train.freeze", "a layer group"]),
    (
        "source-txt",
        "data:\n  source: notes.txt\n",
        ["data.source", "or a folder of class subfolders"],
    ),
]


def test_an_image_source_gets_default_decoding(tmp_path: Path) -> None:
    params = load_params(_write(tmp_path, "data:\n  source: data/external/photos\n"))
    assert params.data.is_folder and params.data.images == ImageParams()
    assert params.data.images.size == [32, 32] and params.data.images.channels == 3
    table = load_params(_write(tmp_path, "data:\n  source: t.csv\n  image_column: path\n"))
    assert table.data.images == ImageParams() and not table.data.is_folder
    assert load_params(_write(tmp_path, "data:\n  source: t.csv\n")).data.images is None


@pytest.mark.parametrize(
    ("text", "fragments"), [(t, f) for _, t, f in BAD_PARAMS], ids=[i for i, _, _ in BAD_PARAMS]
)
def test_bad_params_give_one_line_naming_key_and_value(
    tmp_path: Path, text: str, fragments: list[str]
) -> None:
    path = _write(tmp_path, text)
    message = _assert_one_line_from(_load_error(path), path)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_bad_params_cover_at_least_fifteen_cases() -> None:
    assert len({text for _, text, _ in BAD_PARAMS}) >= 15


def test_several_errors_are_counted_on_the_same_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "train:\n  epochs: 0\n  batch_size: 0\n")
    message = _assert_one_line_from(_load_error(path), path)
    assert "train.epochs" in message
    assert "(and 1 more)" in message


def test_missing_file_is_user_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    error = _load_error(path)
    message = _assert_one_line_from(error, path)
    assert "file not found" in message


def test_directory_is_user_error(tmp_path: Path) -> None:
    error = _load_error(tmp_path)
    message = _assert_one_line_from(error, tmp_path)
    assert "cannot read" in message


def test_non_utf8_file_is_user_error(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_bytes(b"train:\n  epochs: \xff\xfe\n")
    message = _assert_one_line_from(_load_error(path), path)
    assert "cannot read" in message


def test_bad_params_do_not_write_anything(tmp_path: Path) -> None:
    path = _write(tmp_path, "train:\n  epochs: 0\n")
    _load_error(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_repo_params_yaml_loads() -> None:
    params = load_params(REPO_PARAMS)
    assert isinstance(params, Params)
    assert params.pipeline.name
    assert params.train.model.family == "mlp"
    assert parse_params(params.as_dict()) == params


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_params(_write(tmp_path, "")) == Params()


def test_comment_only_file_gives_defaults(tmp_path: Path) -> None:
    assert load_params(_write(tmp_path, "# nothing here\n")) == Params()


def test_defaults_are_valid_values() -> None:
    params = Params()
    assert params.data.source == "builtin:digits"
    assert params.train.epochs >= 1
    assert 0 < params.split.val_fraction + params.split.test_fraction < 0.9
    assert params.model_name == params.pipeline.name


@pytest.mark.parametrize(
    ("literal", "expected"),
    [("1e-3", 0.001), ("1E-3", 0.001), ("+1e-3", 0.001), ("1.0e-3", 0.001), ("1e0", 1.0)],
)
def test_exponent_without_dot_is_a_float(tmp_path: Path, literal: str, expected: float) -> None:
    params = load_params(_write(tmp_path, f"train:\n  learning_rate: {literal}\n"))
    assert isinstance(params.train.learning_rate, float)
    assert params.train.learning_rate == expected


def test_exponent_float_in_fraction(tmp_path: Path) -> None:
    params = load_params(_write(tmp_path, "validate:\n  max_duplicate_fraction: 5e-2\n"))
    assert params.validate_.max_duplicate_fraction == pytest.approx(0.05)


def test_integer_accepted_for_float_field(tmp_path: Path) -> None:
    params = load_params(_write(tmp_path, "train:\n  learning_rate: 1\n"))
    assert params.train.learning_rate == 1.0


def test_valid_overrides_are_read(tmp_path: Path) -> None:
    text = (
        "pipeline:\n  name: my-model.v2\n"
        "data:\n  source: data/external/my.csv\n  target: label\n  max_rows: 500\n"
        "train:\n  epochs: 3\n  optimizer: sgd\n  model:\n    mlp:\n      hidden_sizes: [16]\n"
        "      activation: gelu\n      batch_norm: true\n"
        "register:\n  model_name: other\n"
    )
    params = load_params(_write(tmp_path, text))
    assert params.pipeline.name == "my-model.v2"
    assert params.data.source == "data/external/my.csv"
    assert params.data.max_rows == 500
    assert params.train.epochs == 3
    assert params.train.model.family == "mlp"
    assert params.train.model.mlp.hidden_sizes == [16]
    assert params.train.model.mlp.batch_norm is True
    assert params.train.model.selected == params.train.model.mlp
    assert params.model_name == "other"


def test_as_dict_uses_params_yaml_keys() -> None:
    data = Params().as_dict()
    assert set(data) == {
        "pipeline",
        "data",
        "validate",
        "split",
        "train",
        "evaluate",
        "register",
        "registry",
        "tune",
        "schedule",
        "monitor",
    }
    assert data["train"]["model"]["family"] == "mlp"
    assert data["train"]["model"]["mlp"]["hidden_sizes"] == [256, 128]
    assert set(data["train"]["model"]) == {"family", "mlp", "cnn", "rnn", "transformer"}
    assert data["train"]["early_stopping"]["patience"] == 15
    assert "patience" not in data["train"]


def test_params_is_frozen() -> None:
    params = Params()
    with pytest.raises(ValidationError):
        params.train = TrainParams()  # type: ignore[misc]
    with pytest.raises(ValidationError):
        params.train.epochs = 3  # type: ignore[misc]
    with pytest.raises(ValidationError):
        params.train.model.mlp.dropout = 0.5  # type: ignore[misc]
    with pytest.raises(ValidationError):
        params.train.early_stopping.patience = 1  # type: ignore[misc]
    assert params.train.epochs == TrainParams().epochs


def test_sections_reject_unknown_keys_directly() -> None:
    with pytest.raises(ValidationError):
        MLPParams(foo=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        EvaluateParams(primary_metric="auc")  # type: ignore[arg-type]


@pytest.mark.parametrize("family", ["mlp", "cnn", "rnn", "transformer"])
def test_one_key_switches_family_in_repo_params(family: str) -> None:
    data = load_params(REPO_PARAMS).as_dict()
    data["train"]["model"]["family"] = family
    params = parse_params(data)
    assert params.train.model.family == family
    selected = params.train.model.selected
    assert selected == getattr(params.train.model, family)
    expected = {"mlp": MLPParams, "cnn": CNNParams, "rnn": RNNParams}
    assert isinstance(selected, expected.get(family, TransformerParams))


def test_repo_params_yaml_spells_out_every_train_key() -> None:
    raw = yaml.safe_load(REPO_PARAMS.read_text(encoding="utf-8"))["train"]
    assert set(raw) == set(TrainParams.model_fields)
    assert set(raw["model"]) == set(ModelParams.model_fields)
    for family in ("mlp", "cnn", "rnn", "transformer"):
        section = ModelParams.model_fields[family].annotation
        assert section is not None
        assert set(raw["model"][family]) == set(section.model_fields), family
    assert set(raw["schedule"]) == set(ScheduleParams.model_fields)
    assert set(raw["early_stopping"]) == set(EarlyStoppingParams.model_fields)


def test_nested_sections_from_dicts_or_instances() -> None:
    from_dict = TrainParams.model_validate(
        {"early_stopping": {"patience": 2}, "model": {"family": "rnn", "rnn": {"cell": "gru"}}}
    )
    from_instances = TrainParams(
        early_stopping=EarlyStoppingParams(patience=2),
        model=ModelParams(family="rnn", rnn=RNNParams(cell="gru")),
    )
    assert from_dict == from_instances
    assert from_dict.model.selected == RNNParams(cell="gru")


def test_transformer_width_must_divide_by_heads_directly() -> None:
    with pytest.raises(ValidationError, match=r"d_model = 30 .* n_heads = 4"):
        TransformerParams(d_model=30, n_heads=4)
    assert TransformerParams(d_model=32, n_heads=4).d_model == 32


@pytest.mark.parametrize(
    ("metric", "mode"), [("val_loss", "min"), ("val_accuracy", "max"), ("val_f1_macro", "max")]
)
def test_early_stopping_mode_follows_metric(metric: str, mode: str) -> None:
    assert EarlyStoppingParams(metric=metric).mode == mode  # type: ignore[arg-type]


def test_data_input_shape_named_in_cnn_hint_is_a_params_key(tmp_path: Path) -> None:
    params = load_params(_write(tmp_path, "data:\n  input_shape: [1, 8, 8]\n"))
    assert params.data.input_shape == [1, 8, 8]


def test_parse_params_names_its_source() -> None:
    with pytest.raises(UserError) as info:
        parse_params({"train": {"epochs": 0}}, source="elsewhere.yaml")
    assert str(info.value).startswith("elsewhere.yaml: train.epochs = 0")


def test_parse_params_none_gives_defaults() -> None:
    assert parse_params(None) == Params()


# --------------------------------------------------------------------- found bugs


@pytest.mark.parametrize("text", ["? [a, b]\n: 1\n", "train:\n  ? {a: 1}\n  : 2\n"])
def test_unhashable_key_is_user_error(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path, text)
    _assert_one_line_from(_load_error(path), path)


def test_unknown_key_with_newline_is_one_line(tmp_path: Path) -> None:
    path = _write(tmp_path, '"a\\nb": 1\n')
    _assert_one_line_from(_load_error(path), path)


def test_yaml_merge_keys_are_supported(tmp_path: Path) -> None:
    text = "train:\n  <<: {epochs: 3}\n  batch_size: 8\n"
    params = load_params(_write(tmp_path, text))
    assert params.train.epochs == 3
    assert params.train.batch_size == 8


@pytest.mark.parametrize("section", ["validate_", "register_"])
def test_python_field_names_are_not_params_keys(tmp_path: Path, section: str) -> None:
    path = _write(tmp_path, f"{section}: {{}}\n")
    message = _assert_one_line_from(_load_error(path), path)
    assert section in message


def test_leading_zero_int_is_decimal_like_dvc(tmp_path: Path) -> None:
    params = load_params(_write(tmp_path, "train:\n  epochs: 010\n"))
    assert params.train.epochs == 10


def test_sexagesimal_is_not_an_int(tmp_path: Path) -> None:
    path = _write(tmp_path, "train:\n  epochs: 1:30\n")
    message = _assert_one_line_from(_load_error(path), path)
    assert "train.epochs" in message


def test_signed_leading_dot_float(tmp_path: Path) -> None:
    params = load_params(_write(tmp_path, "train:\n  learning_rate: +.5\n"))
    assert params.train.learning_rate == 0.5
