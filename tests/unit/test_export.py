"""`mlops export`'s pure parts: parity checks and tolerances, options, variant names and
tags, the require_export gate, pruning, and the ONNX/TorchScript round trips of a tiny
module through onnxruntime and torch.jit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from mlops.errors import UserError
from mlops.models import ModelSpec, build_model
from mlops.params import GateParams
from registry.export import formats, parity
from registry.export.records import passing_exports, records, tag, variant
from registry.export.service import check_request, to_onnx
from registry.gates import Evidence, evaluate, passed

RNG = np.random.default_rng(0)
Y = np.arange(200) % 4
# Confident logits whose argmax is the label on every row: accuracy 1.0.
LOGITS = (np.eye(4)[Y] * 6.0 + RNG.normal(0, 0.1, (200, 4))).astype(np.float32)


def _compare(exported: np.ndarray, quantized: bool = False, **kw: float) -> parity.Parity:
    return parity.compare("classification", Y, LOGITS, LOGITS, exported, quantized=quantized, **kw)


def _check(result: parity.Parity, name: str) -> parity.Check:
    return next(c for c in result.checks if c.check == name)


# --- parity -------------------------------------------------------------------------------


def test_an_identical_fp32_export_passes_every_check() -> None:
    result = _compare(LOGITS.copy())
    assert result.passed and result.max_abs_diff == 0.0 and result.agreement == 1.0
    assert result.metric == "accuracy" and result.baseline == result.exported == 1.0
    assert [c.check for c in result.checks] == ["max abs diff", "label agreement",
                                                "accuracy delta"]  # fmt: skip


def test_fp32_probabilities_must_match_within_the_tolerance() -> None:
    near = LOGITS + 1e-6
    assert _compare(near).passed
    off = LOGITS.copy()
    off[0, 0] += 0.05  # moves row 0's probabilities by ~1e-4 or more, not its label
    result = _compare(off)
    assert not result.passed and result.failed() == _check(result, "max abs diff")
    assert result.max_abs_diff > parity.FP32_MAX_ABS_DIFF
    assert _check(result, "label agreement").passed


def test_a_flipped_label_fails_fp32_but_not_int8() -> None:
    flipped = LOGITS.copy()
    flipped[0] = np.roll(flipped[0], 1)  # row 0 now predicts another class
    fp32 = _compare(flipped)
    assert not _check(fp32, "label agreement").passed and fp32.agreement == 0.995
    int8 = _compare(flipped, quantized=True)
    assert int8.passed, int8.checks
    assert "max abs diff" not in [c.check for c in int8.checks]  # int8 is not held to it
    assert int8.delta == pytest.approx(-0.5)  # one row of 200: half a point


def test_int8_needs_98_percent_agreement_and_a_bounded_accuracy_drop() -> None:
    flipped = LOGITS.copy()
    flipped[:3] = np.roll(flipped[:3], 1, axis=1)  # 1.5% of rows
    result = _compare(flipped, quantized=True)
    assert [c.passed for c in result.checks] == [True, False]
    assert result.failed() == _check(result, "accuracy delta")
    assert _check(result, "accuracy delta").value == "-1.50 points"
    assert _compare(flipped, quantized=True, max_drop=2.0).passed
    flipped[:5] = np.roll(flipped[:5], 1, axis=1)  # 2.5% of rows
    result = _compare(flipped, quantized=True, max_drop=5.0)
    assert result.failed() == _check(result, "label agreement")
    assert _check(result, "label agreement").value == "97.50%"


def test_the_accuracy_delta_is_against_the_registered_model_not_the_pruned_one() -> None:
    pruned = LOGITS.copy()
    pruned[:10] = np.roll(pruned[:10], 1, axis=1)  # pruning cost 5 points
    result = parity.compare(
        "classification", Y, LOGITS, pruned, pruned.copy(), quantized=False, max_drop=1.0
    )
    assert _check(result, "max abs diff").passed and _check(result, "label agreement").passed
    assert result.delta == pytest.approx(-5.0) and not result.passed
    relaxed = parity.compare(
        "classification", Y, LOGITS, pruned, pruned.copy(), quantized=False, max_drop=5.0
    )
    assert relaxed.passed


def test_regression_parity_is_relative_to_the_spread_of_predictions() -> None:
    y = RNG.normal(10, 3, 100)
    base = y + RNG.normal(0, 0.5, 100)
    result = parity.compare("regression", y, base, base, base + 1e-5, quantized=False)
    assert result.passed and result.metric == "rmse"
    worse = parity.compare("regression", y, base, base, base + 0.5, quantized=True)
    assert not worse.passed and worse.delta < -1.0
    assert _check(worse, "agreement").value == "0.00%"


def test_softmax_is_stable_for_large_logits() -> None:
    probs = parity.softmax(np.array([[1000.0, 0.0], [0.0, 0.0]]))
    assert np.allclose(probs, [[1.0, 0.0], [0.5, 0.5]])


# --- options, names, tags, gate -----------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("tflite", None, None), "--format 'tflite': expected one of onnx, torchscript"),
        (("onnx", "int4", None), "--quantize 'int4': expected int8"),
        (("onnx", None, 1.0), "--prune 1: expected a fraction between 0 and 1"),
        (("onnx", None, 0.0), "--prune 0: expected a fraction between 0 and 1"),
        (("onnx", None, -0.2), "--prune -0.2"),
    ],
)
def test_bad_options_are_one_line(args: tuple[str, str | None, float | None], message: str) -> None:
    with pytest.raises(UserError) as err:
        check_request(*args)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_bad_max_drop() -> None:
    with pytest.raises(UserError, match="--max-drop -1"):
        check_request("onnx", None, None, -1.0)


def test_variant_names() -> None:
    assert variant("onnx") == "onnx"
    assert check_request(" ONNX ", "INT8", None).variant == "onnx-int8"
    assert variant("torchscript", None, 0.5) == "torchscript-pruned50"
    assert variant("onnx", "int8", 0.125) == "onnx-int8-pruned12.5"
    assert tag("onnx-int8") == "mlops.export.onnx-int8"


def test_passing_exports_read_from_one_json_tag_per_export() -> None:
    record = {"parity": "passed", "format": "onnx", "sha256": "a" * 64, "artifact": "runs:/r/x"}
    tags = {
        tag("onnx-int8"): json.dumps(record),
        tag("onnx"): json.dumps(record | {"parity": "failed"}),
        tag("torchscript"): json.dumps({"parity": "passed", "format": "torchscript"}),  # no file
        tag("bad"): "{not json",
        "mlops.stage": "staging",
    }
    assert passing_exports(tags) == {"onnx-int8": "onnx"}
    assert records(tags)["onnx-int8"]["sha256"] == "a" * 64
    assert passing_exports({}) == {}


def test_exports_recorded_one_tag_per_field_are_still_read() -> None:
    old = "mlops.export.onnx-int8"
    tags = {
        f"{old}.parity": "passed",
        f"{old}.format": "onnx",
        f"{old}.sha256": "a" * 64,
        f"{old}.artifact": "runs:/r/exports/digits-v1/onnx-int8/model.onnx",
        "mlops.export.torchscript.parity": "passed",  # no sha256: not a complete record
        "mlops.export.torchscript.format": "torchscript",
    }
    assert passing_exports(tags) == {"onnx-int8": "onnx"}


def test_the_require_export_gate() -> None:
    gate = GateParams(integrity=False, signature=False, require_export="onnx")
    none = evaluate(gate, "accuracy", Evidence(2), None)
    assert [(r.gate, r.value, r.passed) for r in none] == [("export", "none", False)]
    other = evaluate(gate, "accuracy", Evidence(2, exports={"torchscript": "torchscript"}), None)
    assert not passed(other)
    ok = evaluate(gate, "accuracy", Evidence(2, exports={"onnx-int8": "onnx"}), None)
    assert passed(ok) and ok[0].value == "onnx-int8"
    bare = GateParams(integrity=False, signature=False)
    assert evaluate(bare, "accuracy", Evidence(2), None) == []


# --- conversions of a tiny module ---------------------------------------------------------


@pytest.fixture(scope="module")
def tiny() -> object:

    torch.manual_seed(0)
    hyper = {"hidden_sizes": [16], "activation": "relu", "dropout": 0.0, "batch_norm": True}
    spec = ModelSpec("mlp", 8, [0, 1, 2], hyper, [0.5] * 8, [2.0] * 8, [8])
    return build_model(spec).eval()


def test_pruning_zeroes_the_fraction_across_layers_and_keeps_the_original(tiny: object) -> None:
    pruned = formats.prune_global(tiny, 0.5)  # type: ignore[arg-type]
    assert formats.sparsity(pruned) == pytest.approx(0.5, abs=1 / 176)  # 8·16 + 16·3 weights
    assert formats.sparsity(tiny) == 0.0  # type: ignore[arg-type]
    assert not any(name.endswith("_orig") for name, _ in pruned.named_parameters())
    x = RNG.normal(size=(5, 8)).astype(np.float32)
    assert formats.torch_runner(pruned)(x).shape == (5, 3)


def test_onnx_round_trip_has_a_dynamic_batch_and_no_external_data(
    tiny: object, tmp_path: Path
) -> None:

    x = RNG.normal(size=(7, 8)).astype(np.float32)
    path = to_onnx(tiny, x[:1], tmp_path / "m.onnx")  # type: ignore[arg-type]
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
    model = onnx.load(str(path))
    assert not any(onnx.external_data_helper.uses_external_data(t) for t in model.graph.initializer)
    run, ref = formats.onnx_runner(path), formats.torch_runner(tiny)(x)  # type: ignore[arg-type]
    for rows in (x[:1], x):
        assert np.abs(run(rows) - ref[: len(rows)]).max() < 1e-5
    int8 = formats.quantize_onnx(path, tmp_path / "q.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "q.onnx"]
    assert formats.onnx_runner(int8)(x).shape == (7, 3)
    assert formats.p50_ms(run, x) > 0


def test_torchscript_round_trip_fp32_and_int8(tiny: object, tmp_path: Path) -> None:
    x = RNG.normal(size=(7, 8)).astype(np.float32)
    ref = formats.torch_runner(tiny)(x)  # type: ignore[arg-type]
    path = formats.to_torchscript(tiny, x[:1], tmp_path / "m.pt")  # type: ignore[arg-type]
    run = formats.torchscript_runner(path)
    assert np.abs(run(x) - ref).max() < 1e-5 and run(x[:1]).shape == (1, 3)
    quantized = formats.quantize_torch(tiny)  # type: ignore[arg-type]
    q = formats.torchscript_runner(formats.to_torchscript(quantized, x, tmp_path / "q.pt"))
    assert q(x).shape == (7, 3) and np.abs(q(x) - ref).max() < 0.5
