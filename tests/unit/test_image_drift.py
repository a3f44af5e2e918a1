"""Drift features of images: decoded as the version reads them (files or the sink's
pixels), intensity, contrast, the head's input projected on the training embeddings'
principal components, and the files' sizes when known."""

from __future__ import annotations

import base64
import re

import numpy as np
import pandas as pd
import pytest

from mlops.errors import UserError
from mlops.images import ImageFormat
from mlops.models import build_model, make_spec
from mlops.monitoring.images import COMPONENTS, current_images, decode_column, embeddings, features
from mlops.params import ModelParams
from mlops.serving.schema import InputSpec
from tests.shapes import CLASSES, png_bytes

FMT = ImageFormat("image", (16, 16), 3)


def _files(n: int, seed: int = 0) -> list[bytes]:
    return [png_bytes(CLASSES[i % 3], seed=seed + i, size=24) for i in range(n)]


def _model() -> object:
    spec = make_spec(ModelParams(family="cnn"), [0, 1, 2], [0.4] * 3, [0.3] * 3, FMT.shape,
                     image=FMT)  # fmt: skip
    return build_model(spec).eval()


def test_files_and_base64_decode_with_their_sizes() -> None:
    files = _files(4)
    decoded = decode_column([*files[:2], *(base64.b64encode(f).decode() for f in files[2:])],
                            FMT, "now.parquet")  # fmt: skip
    np.testing.assert_array_equal(decoded.rows, FMT.rows(files))
    assert decoded.sizes is not None and decoded.sizes.tolist() == [[24.0, 24.0]] * 4
    with pytest.raises(UserError, match=re.escape("now.parquet: row 1: column image")):
        decode_column([files[0], b"not an image"], FMT, "now.parquet")


def test_the_sinks_decoded_pixels_are_read_back() -> None:
    rows = FMT.rows(_files(3))
    names = InputSpec(("image",), tuple(FMT.shape), 8, FMT).sink_names
    assert len(names) == FMT.values and names[0] == "image.0"
    frame = pd.DataFrame(rows.astype(np.float64), columns=list(names))
    found = current_images(frame, FMT, "sink")
    np.testing.assert_allclose(found.rows, rows, rtol=0, atol=1e-7)
    assert found.sizes is None
    with pytest.raises(UserError, match="no column 'image'"):
        current_images(pd.DataFrame({"x": [1.0]}), FMT, "sink")


def test_features_of_both_sets() -> None:
    model = _model()
    ref = decode_column(_files(30), FMT, "ref")
    cur = decode_column(_files(20, seed=100), FMT, "cur")
    names, x_ref, x_cur = features(model, FMT, ref, cur)  # type: ignore[arg-type]
    pcs = [f"embedding.pc{i + 1}" for i in range(COMPONENTS)]
    expected = ["intensity.red", "intensity.green", "intensity.blue", "contrast", *pcs]
    assert names == [*expected, "width", "height"]
    assert x_ref.shape == (30, len(names)) and x_cur.shape == (20, len(names))
    np.testing.assert_allclose(x_ref[:, 0], ref.rows.reshape(30, 3, -1)[:, 0].mean(axis=1),
                               rtol=1e-6)  # fmt: skip
    assert abs(x_ref[:, 4:9].mean(axis=0)).max() < 1e-4  # centred on the training mean
    assert embeddings(model, ref.rows).shape == (30, 128)  # the CNN head's input: head_size
    no_sizes = type(cur)(cur.rows, None)
    assert "width" not in features(model, FMT, ref, no_sizes)[0]  # type: ignore[arg-type]
