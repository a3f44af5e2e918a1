"""Reading params.yaml: YAML 1.2 scalars as DVC reads them, and one-line errors.

A wrong type, an unknown key, an out-of-range value, NaN or broken YAML becomes one
`UserError` line naming the file, the key and the value. The file is read through
`mlops.safe_yaml`: a regular file of at most 1 MiB, nesting and aliases bounded.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mlops import safe_yaml
from mlops.errors import UserError
from mlops.params._sections import PARAMS_FILE, Params


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = str(part)
            if not re.fullmatch(r"[\w.-]+", text):
                text = repr(text)
            out += ("." if out else "") + text
    return out or "(top level)"


def _show(value: Any) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    text = repr(value) if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True)
    text = text.strip().removesuffix("...").strip()
    return text if len(text) <= 60 else text[:57] + "..."


def describe_error(error: Mapping[str, Any]) -> str:
    """One pydantic validation error as `key.path: what is wrong`."""
    key = _key_path(tuple(error["loc"]))
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{key}: unknown key"
    if kind == "missing":
        return f"{key}: missing"
    msg = str(error["msg"]).removeprefix("Value error, ")
    if kind == "finite_number":
        msg = "must be a finite number"
    elif kind == "string_pattern_mismatch" and key.startswith("registry."):
        msg = "a stage name: a lowercase letter, then lowercase letters, digits, '_', '-' (max 32)"
    elif kind == "string_pattern_mismatch" and key == "train.init_from":
        msg = "expected MODEL@STAGE or MODEL@VERSION (e.g. shapes@production, shapes@3)"
    elif kind == "string_pattern_mismatch" and key.startswith("train.freeze"):
        msg = "a layer group: body, head, fc, norm, embed, rnn, hidden.N, conv.N or encoder.N"
    elif kind == "string_pattern_mismatch":
        msg = "must start with a letter and hold only letters, digits, '_', '.', '-' (max 63)"
    if key == "(top level)" and re.match(r"^[a-z_]+\.[\w.]+: ", msg):
        return msg  # a check across sections names its own key
    if isinstance(error.get("input"), dict):  # a check across keys of one section
        return f"{key}: {msg}"
    return f"{key} = {_show(error.get('input'))}: {msg}"


def parse_params(data: Any, source: str = PARAMS_FILE) -> Params:
    """Validate already-loaded YAML data; raise `UserError` with one line on failure."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    try:
        return Params.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise UserError(f"{source}: {describe_error(errors[0])}{more}") from None


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate params.yaml; any problem becomes one `UserError` line."""
    path = Path(path)
    return parse_params(safe_yaml.load(path), source=str(path))
