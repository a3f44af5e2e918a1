"""Convert a verified version to ONNX in a child process, so the ONNX server never imports
torch or the exporter (they would stay in its memory for good).

The child rebuilds the module from the safetensors weights (refused unless their sha256
is the registered one), exports it with `registry.export.formats.to_onnx`, runs the file
in ONNX Runtime next to the module on a few rows, and prints one JSON line: the file's
sha256 and the largest difference. `python -m mlops.serving.convert WEIGHTS_DIR OUT SHA256`, run by
`mlops.serving.backends.convert` (this module imports the backends, never the reverse).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mlops.errors import DataError, MlopsError, first_line
from mlops.io import file_digest
from mlops.models import load_model
from mlops.serving.backends import OnnxPredictor, TorchPredictor, check_parity, example_rows
from registry.export.formats import to_onnx


def _main(weights_dir: Path, out: Path, sha256: str) -> dict[str, object]:
    module, spec = load_model(weights_dir, expected_sha256=sha256)
    example = example_rows(spec)
    try:
        to_onnx(module, example, out)
    except Exception as exc:  # the exporter raises many types; one line says which
        raise DataError(first_line(exc)[:300]) from None
    diff = check_parity(TorchPredictor(module), OnnxPredictor(out), example)
    return {"sha256": file_digest(out), "max_abs_diff": diff}


if __name__ == "__main__":
    try:
        result = _main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
    except MlopsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    print(json.dumps(result))
