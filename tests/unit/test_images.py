"""Images: decoding (formats, modes, sizes, truncated and hostile files), the folder and
table sources, the checks `validate` runs, and per-channel normalisation."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from mlops.data import features_and_target, infer_schema
from mlops.errors import DataError
from mlops.images import ImageError, ImageFormat
from mlops.images.checks import survey
from mlops.images.format import channel_stats, encode_png, image_bytes
from mlops.images.source import read_folder, read_table
from mlops.nets import Normalize
from tests.shapes import make_folder, png_bytes

RGB = ImageFormat("image", (16, 12), 3)
GRAY = ImageFormat("image", (8, 8), 1)


def _encoded(mode: str, fmt: str, size: tuple[int, int] = (20, 30)) -> bytes:
    colour: object = 128 if mode in ("L", "P", "1", "I;16") else (10, 200, 30, 255)[: len(mode)]
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, fmt)  # type: ignore[arg-type]
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_each_format_decodes_to_the_asked_size(fmt: str) -> None:
    pixels = RGB.decode(_encoded("RGB", fmt))
    assert pixels.shape == (3, 16, 12) and pixels.dtype == np.uint8
    assert abs(int(pixels[1].mean()) - 200) <= 3  # green stays green, whatever the codec
    assert GRAY.decode(_encoded("RGB", fmt)).shape == (1, 8, 8)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "1"])
def test_other_8_bit_modes_are_converted(mode: str) -> None:
    assert RGB.decode(_encoded(mode, "PNG")).shape == (3, 16, 12)


def test_a_16_bit_image_is_refused_by_mode() -> None:
    with pytest.raises(ImageError, match="mode I;16"):
        RGB.decode(_encoded("I;16", "PNG"))


def test_truncated_foreign_and_huge_files_are_refused() -> None:
    data = png_bytes("circle", size=64)
    with pytest.raises(ImageError, match="truncated"):
        RGB.decode(data[: len(data) // 2])
    with pytest.raises(ImageError, match="GIF image: not PNG, JPEG or WebP"):
        RGB.decode(_encoded("P", "GIF"))
    with pytest.raises(ImageError, match="not an image"):
        RGB.decode(b"hello, world")
    bomb = io.BytesIO()
    Image.new("1", (8000, 6000)).save(bomb, "PNG")  # 48M pixels in a few kB
    with pytest.raises(ImageError, match="8000x6000: over 40000000 pixels"):
        RGB.decode(bomb.getvalue())
    with pytest.raises(ImageError, match="over the limit"):
        RGB.open(b"\x89PNG" + bytes(33 * 1024 * 1024))


def test_base64_text_and_bytes_are_both_images() -> None:
    data = png_bytes("square")
    assert image_bytes(base64.b64encode(data).decode()) == data
    assert image_bytes(memoryview(data)) == data
    with pytest.raises(ImageError, match="not base64"):
        image_bytes("not base64!")
    with pytest.raises(ImageError, match="int"):
        image_bytes(7)


def test_rows_survive_a_round_trip_through_png() -> None:
    rows = RGB.rows([png_bytes(k, seed=i) for i, k in enumerate(["circle", "square"])])
    assert rows.shape == (2, 3 * 16 * 12) and rows.min() >= 0.0 and rows.max() <= 1.0
    again = RGB.rows(encode_png(rows, RGB.shape))
    np.testing.assert_array_equal(again, rows)


def test_channel_stats_and_per_channel_normalize_agree() -> None:
    rows = RGB.rows([png_bytes(k, seed=3) for k in ("circle", "square", "triangle")])
    mean, std = channel_stats(rows, 3)
    by_channel = rows.reshape(3, 3, -1)
    assert mean[2] == pytest.approx(float(by_channel[:, 2].mean()), rel=1e-6)
    out = Normalize(mean, std, RGB.shape)(torch.from_numpy(rows))
    assert out.shape == (3, *RGB.shape)
    assert float(out[:, 1].mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(out[:, 1].std(unbiased=False)) == pytest.approx(1.0, abs=1e-4)


def test_a_folder_is_read_in_order_skipping_other_files(tmp_path: Path) -> None:
    folder = tmp_path / "shapes"
    make_folder(folder, per_class=4)
    (folder / "circle" / "notes.txt").write_text("not an image")
    (folder / "circle" / ".DS_Store").write_bytes(b"\0")
    (folder / ".cache").mkdir()
    found = read_folder(folder, "image", tmp_path)
    assert found.skipped == 1
    assert list(found.frame["target"]) == ["circle"] * 4 + ["square"] * 4 + ["triangle"] * 4
    assert found.frame["_file"].iloc[0] == "circle/0000.png"
    assert found.frame["image"].iloc[0] == (folder / "circle" / "0000.png").read_bytes()


def test_paths_leading_outside_the_source_are_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes("circle"))
    folder = tmp_path / "work" / "shapes"
    make_folder(folder, per_class=1)
    os.symlink(secret, folder / "circle" / "link.png")
    with pytest.raises(DataError, match="leads outside the data source"):
        read_folder(folder, "image", tmp_path / "work")
    table = pd.DataFrame({"path": ["../../secret.png"], "target": ["circle"]})
    with pytest.raises(DataError, match="leads outside"):
        read_table(table, folder / "labels.csv", "path", tmp_path / "work")
    table = pd.DataFrame({"path": [None], "target": ["circle"]})
    with pytest.raises(DataError, match="row 2: path is not a file path"):
        read_table(table, folder / "labels.csv", "path", tmp_path / "work")


def test_survey_names_each_bad_file() -> None:
    good = png_bytes("circle", size=48)
    tiny = _encoded("RGB", "PNG", size=(4, 30))
    found = survey(
        [good, good[:60], tiny, _encoded("I;16", "PNG")],
        ["a.png", "b.png", "c.png", "d.png"],
        RGB,
        min_size=8,
    )
    assert [name for name, _ in found.unreadable] == ["b.png"]
    assert found.tiny == [("c.png", "4x30")]
    assert found.mode == [("d.png", "mode I;16")]


def test_a_corrupt_image_in_a_split_is_named_not_a_traceback() -> None:
    good = png_bytes("circle")
    frame = pd.DataFrame({"image": [good, good[:40]], "_file": ["a.png", "b.png"],
                          "target": ["circle", "circle"]})  # fmt: skip
    schema = infer_schema(frame.copy(), "photos", "target", image=RGB)
    with pytest.raises(DataError, match=r"image b\.png: not an image Pillow can read"):
        features_and_target(frame, schema)


def test_a_file_name_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "shapes"
    make_folder(folder, per_class=1)
    bad = os.fsdecode(b"bad\xff.png")
    (folder / "circle" / bad).write_bytes(png_bytes("circle"))
    with pytest.raises(DataError, match=r"circle/bad\\xff\.png: the file name is not UTF-8"):
        read_folder(folder, "image", tmp_path)


def test_a_multi_picture_jpeg_reads_its_first_picture() -> None:
    buffer = io.BytesIO()
    first, second = Image.new("RGB", (20, 20), (250, 0, 0)), Image.new("RGB", (20, 20))
    first.save(buffer, "MPO", save_all=True, append_images=[second])
    pixels = RGB.decode(buffer.getvalue())
    assert pixels[0].mean() > 200 and pixels[2].mean() < 30  # red: the first picture


def test_every_bomb_is_refused_in_the_same_words() -> None:
    huge = io.BytesIO()
    Image.new("1", (20000, 20000)).save(huge, "PNG")  # over twice Pillow's own limit
    with pytest.raises(ImageError, match="over 40000000 pixels"):
        RGB.decode(huge.getvalue())


def test_wrapped_base64_and_data_urls_are_images() -> None:
    data = png_bytes("square")
    text = base64.b64encode(data).decode()
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76)) + "\n"
    assert image_bytes(wrapped) == data
    assert image_bytes(f"data:image/png;base64,{text}") == data
