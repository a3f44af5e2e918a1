"""`mlops monitor drift` on a registered digits model in production: the unshifted test
split does not drift (exit 0), a shifted copy does (exit 1, the shifted pixels flagged),
a plot is written, and bad input is one line with exit code 2."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from mlops.data import read_parquet
from mlops.errors import MlopsError
from mlops.lineage import dvc_md5
from mlops.monitoring.cli import app
from mlops.serving.sink import Sink
from registry.promotion import change_stage
from registry.stages import Ref
from tests.integration.registry_project import cli, context, register_small, write_project

SHIFTED = [f"px_3_{c}" for c in range(8)]  # one row of the 8x8 image


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project whose `digits` version 1 (trained on the train split) is in production,
    with the test split as CSV and a copy whose fourth pixel row is 4 brighter."""
    root = tmp_path_factory.mktemp("monitor")
    write_project(root)
    ctx = context(root)
    train_md5 = dvc_md5(root / "data" / "split" / "train.parquet")
    register_small(ctx, tags={"mlops.data.train.md5": train_md5})
    change_stage(ctx, "digits", Ref(version=1), "production", reason="monitor test")
    test = read_parquet(root / "data" / "split" / "test.parquet")
    test.to_csv(root / "test.csv", index=False)
    test.assign(**{c: test[c] + 4.0 for c in SHIFTED}).to_csv(root / "shifted.csv", index=False)
    return root


@pytest.fixture
def in_project(root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(root)
    for key in list(os.environ):
        if key.startswith(("MLOPS_", "DVC_")):
            monkeypatch.delenv(key)
    yield root


def drift(*args: str) -> tuple[int, str]:
    """`mlops monitor drift ARGS…` in this process: (exit code, stdout or error line)."""
    root = typer.Typer()
    root.add_typer(app, name="monitor")
    result = CliRunner().invoke(root, ["monitor", "drift", *args])
    if isinstance(result.exception, MlopsError):
        return result.exception.exit_code, str(result.exception)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout


def test_the_unshifted_test_split_does_not_drift(in_project: Path) -> None:
    code, out = drift("digits", "--input", "test.csv")
    assert code == 0, out
    assert "digits version 1 (@production): 270 rows of test.csv against 1257" in out
    assert "workspace" in out and "Verdict: no drift" in out
    assert "Current accuracy" in out
    plot = in_project / "reports" / "drift" / "digits-v1.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_shifted_copy_drifts_and_names_the_shifted_pixels(in_project: Path) -> None:
    code, out = drift("digits@1", "--input", "shifted.csv", "--json", "--plot", "out/d.png")
    assert code == 1
    found = json.loads(out)
    assert found["drift"] is True and found["version"] == 1
    assert sorted(found["drifted_features"]) == SHIFTED
    assert found["features"][0]["name"] in SHIFTED and found["features"][0]["psi"] > 0.2
    assert found["reasons"][0].startswith("8 of 64 features drifted")
    assert found["reference"]["md5"] == dvc_md5(in_project / "data/split/train.parquet")
    assert found["prediction"]["kind"] == "classes"
    assert set(found["prediction"]["reference"]) == {str(c) for c in range(10)}
    assert (in_project / "out" / "d.png").is_file()


def test_bad_input_is_one_line_with_exit_code_2(in_project: Path) -> None:
    test = pd.read_csv(in_project / "test.csv")
    test.head(10).to_csv(in_project / "few.csv", index=False)
    test.drop(columns=["px_0_1", "px_5_5"]).to_csv(in_project / "partial.csv", index=False)
    test[["target"]].to_csv(in_project / "labels.csv", index=False)
    test.head(0).to_csv(in_project / "empty.csv", index=False)
    cases = {
        ("digits", "--input", "missing.csv"): "missing.csv: file not found",
        ("digits", "--input", "few.csv"): "few.csv: 10 rows; a drift check needs at least 30",
        ("digits", "--input", "partial.csv"): "partial.csv: missing feature columns px_0_1, px_5_5",
        ("digits", "--input", "labels.csv"): "labels.csv: none of the model's 64 feature columns",
        ("digits", "--input", "empty.csv"): "empty.csv: no rows",
        ("digits@staging", "--input", "test.csv"): "model digits: no version holds staging",
        ("digits@7", "--input", "test.csv"): "model digits: no version 7",
        ("digits!", "--input", "test.csv"): "expected MODEL@STAGE or MODEL@VERSION",
        ("digits",): "no serving sink; pass --input FILE",
        ("digits", "--input", "test.csv", "--plot", "d.jpg"): "d.jpg: the plot is a PNG",
        ("digits", "--input", "test.csv", "--sink", "x.db"): "--input FILE or --sink PATH",
    }
    for args, message in cases.items():
        code, line = drift(*args)
        assert (code, "\n" not in line) == (2, True), (args, code, line)
        assert message in line, (args, line)


def test_the_serving_sink_by_default(in_project: Path) -> None:
    test = read_parquet(in_project / "data" / "split" / "test.parquet")
    features = [c for c in test.columns if c != "target"]
    sink = Sink(in_project / ".mlops" / "serving" / "digits.db", 1.0)
    sink.describe("digits", tuple(features))
    for start in range(0, len(test), 100):  # requests of up to 100 rows, labels as answered
        rows = test.iloc[start : start + 100]
        sink.offer("digits", 1, rows[features].to_numpy(), {"predictions": rows["target"]})
    sink.close()
    code, out = drift("digits", "--json")
    assert code == 0, out
    found = json.loads(out)
    assert found["current"] == {"source": str(sink.path), "rows": len(test)}
    assert found["drift"] is False and found["prediction"]["psi"] < 0.1


def test_the_command_as_a_process(in_project: Path) -> None:
    done = cli(
        in_project, "monitor", "drift", "digits", "--input", "shifted.csv", "--plot", "p.png"
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert re.search(r"Verdict: DRIFT — 8 of 64 features drifted", done.stdout)
    bad = cli(in_project, "monitor", "drift", "digits", "--input", "nope.parquet")
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: nope.parquet: file not found"
