"""Image data: what an image model reads (`ImageFormat`: the image column, the size and
channels every image is decoded to), the sources images come from (a folder of class
subfolders, or a table of file paths) and the checks `validate` runs on them.

Decoding uses Pillow. An image model's input everywhere after decoding — training,
evaluation, serving, export, `mlflow.pyfunc` — is the same float32 row of
channels x height x width values in [0, 1], made by `ImageFormat.rows` alone.
"""

from mlops.images.format import (
    EXTENSIONS,
    FILE_COLUMN,
    ImageError,
    ImageFormat,
)

__all__ = ["EXTENSIONS", "FILE_COLUMN", "ImageError", "ImageFormat"]
