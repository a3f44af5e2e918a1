"""Training checkpoints: written atomically each interval, read back with
`torch.load(weights_only=True)` (no arbitrary pickle), matched to their job by a
fingerprint of the model spec, the train params and the data hashes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from mlops.errors import UserError, first_line
from mlops.io import write_with


def fingerprint(spec: dict[str, Any], train_params: dict[str, Any], data: dict[str, str]) -> str:
    """sha256 naming one training job: same model, params and data give the same value."""
    text = json.dumps({"spec": spec, "train": train_params, "data": data}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically (a kill mid-write leaves the previous one intact)."""
    import torch

    write_with(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path, expected: str, required: bool) -> dict[str, Any] | None:
    """The checkpoint at `path` if it belongs to the job `expected`.

    With `required` (the user asked to resume), a missing, unreadable or foreign
    checkpoint is a `UserError`; otherwise it is ignored and training starts afresh.
    """
    import torch

    if not path.is_file():
        if required:
            raise UserError(f"--resume: no checkpoint at {path}")
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's safe loader raises many types on corrupt files
        if required:
            raise UserError(
                f"--resume: {path} is not a loadable checkpoint: {first_line(exc)}"
            ) from None
        return None
    if not isinstance(state, dict) or state.get("fingerprint") != expected:
        if required:
            raise UserError(
                f"--resume: {path} was written for another model, params or data "
                "(remove it or drop --resume to start afresh)"
            )
        return None
    return state
