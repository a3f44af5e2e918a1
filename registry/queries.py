"""Reads for `list`, `show`, `history` and `lineage`: served from the registry's own
tables (no MLflow, no torch imported), which every write keeps in step with MLflow's
aliases. A read never writes: a change left half done by a killed command is reported
(`pending`), shown as the ledger has it, and settled by the next command that changes
the model (or `mlops registry repair`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlops.errors import UserError
from registry.context import Context
from registry.db.store import Entry, Intent, Version
from registry.repair import describe
from registry.stages import Ref


@dataclass(frozen=True)
class Row:
    """A version as listed."""

    name: str
    version: int
    stage: str
    aliases: list[str]
    metrics: dict[str, str]
    git_commit: str
    created_at: float


def pending(ctx: Context, model: str | None = None) -> list[Intent]:
    """Changes left half done (on `model`, or on any model): nothing is repaired here."""
    return ctx.store.intents(model)


def pending_warning(intents: list[Intent]) -> str:
    """One line about unfinished changes, for a read command to print."""

    first = intents[0]
    more = f" and {len(intents) - 1} more" if len(intents) > 1 else ""
    models = sorted({i.model for i in intents})
    return (
        f"{first.model}: {describe(first)} was left unfinished{more}; shown here as the "
        f"ledger has it. `mlops registry repair {' '.join(models)}` (or the next change to "
        "it) completes or undoes it"
    )


def missing_model(ctx: Context, model: str) -> UserError:
    """`model` is not registered: one line that lists the registered ones."""
    names = ctx.store.models()
    if not names:
        return UserError(
            f"model {model}: not registered (no model is registered yet; `dvc repro` registers one)"
        )
    shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
    return UserError(f"model {model}: not registered (registered models: {shown})")


def unheld_stage(ctx: Context, model: str, stage: str) -> UserError:
    """No version of `model` holds `stage`: one line that says which stages are held."""
    holders = ctx.store.holders(model)
    held = ", ".join(f"{s} v{v}" for s, v in sorted(holders.items()))
    return UserError(
        f"model {model}: no version holds {stage} ("
        + (f"held: {held}" if held else "no stage is held")
        + f"; `mlops registry promote {model} VERSION --to {stage}`)"
    )


def list_versions(ctx: Context, model: str | None = None) -> list[Row]:
    """Every version of one model (or all), newest first."""
    names = [model] if model else ctx.store.models()
    rows = []
    for name in names:
        held: dict[int, list[str]] = {}
        for stage, version in ctx.store.holders(name).items():
            held.setdefault(version, []).append(stage)
        for v in ctx.store.versions(name):
            rows.append(
                Row(
                    v.model,
                    v.version,
                    v.stage,
                    sorted(held.get(v.version, [])),
                    _metrics(v),
                    v.info.get("mlops.git_commit", "")[:10],
                    v.created_at,
                )
            )
    return rows


def _metrics(v: Version) -> dict[str, str]:
    prefix = "mlops.metric.test_"
    return {
        k.removeprefix(prefix): str(val)
        for k, val in sorted(v.info.items())
        if k.startswith(prefix) and k != f"{prefix}n_samples"
    }


def get(ctx: Context, model: str, ref: Ref) -> Version:
    """The version `ref` names, from the store (one line naming what is missing)."""
    number = ref.version
    if ref.stage is not None:
        number = ctx.store.holders(model).get(ref.stage)
    found = ctx.store.version(model, number) if number is not None else None
    if found is not None:
        return found
    if not ctx.store.has_model(model):
        raise missing_model(ctx, model)
    if ref.stage is not None:
        raise unheld_stage(ctx, model, ref.stage)
    raise UserError(f"model {model}: no version {number}")


def show(ctx: Context, model: str, ref: Ref) -> dict[str, Any]:
    """Everything known about one version, and who holds which stage of its model."""
    v = get(ctx, model, ref)
    info = dict(v.info)
    params = info.pop("params", {})
    return {
        "name": v.model,
        "version": v.version,
        "stage": v.stage,
        "sha256": v.sha256,
        "artifact_sha256": v.artifact_sha256,
        "run_id": v.run_id,
        "source": v.source,
        "created_at": v.created_at,
        "metrics": _metrics(v),
        "params": params,
        "lineage": lineage_of(v),
        "holders": ctx.store.holders(model),
    }


def lineage_of(v: Version) -> dict[str, Any]:
    """git commit → DVC data hashes → params → MLflow runs → Optuna study/trial."""
    info = v.info
    data = {
        k.removeprefix("mlops.data.").removesuffix(".md5"): val
        for k, val in sorted(info.items())
        if k.startswith("mlops.data.")
    }
    chain: dict[str, Any] = {
        "git_commit": info.get("mlops.git_commit", "unknown"),
        "git_dirty": info.get("mlops.git_dirty", "unknown"),
    }
    if "mlops.dvc_exp.name" in info:  # trained by `dvc exp run`: the experiment, on top
        chain["dvc_experiment"] = {
            "name": info["mlops.dvc_exp.name"],
            "ref": info.get("mlops.dvc_exp.ref", ""),
            "params_changed": info.get("mlops.dvc_exp.params", "{}"),
        }
    parent = {
        k.removeprefix("mlops.parent."): val
        for k, val in sorted(info.items())
        if k.startswith("mlops.parent.")
    }
    if parent:  # fine-tuned from another version (`train.init_from`)
        chain["parent"] = parent
    return chain | {
        "data_md5": data,
        "params_hash": info.get("mlops.params_hash", "unknown"),
        "family": info.get("mlops.family", "unknown"),
        "train_run_id": info.get("mlops.train_run_id", "unknown"),
        "register_run_id": v.run_id,
        "optuna_study": info.get("mlops.optuna.study", "not tuned"),
        "optuna_trial": info.get("mlops.optuna.trial", "not tuned"),
    }


MAX_ANCESTORS = 50


def ancestry(ctx: Context, v: Version) -> list[dict[str, str]]:
    """The versions `v` was fine-tuned from, parent first, each with what its lineage
    recorded (model, version, sha256, head); a parent no longer in the store ends the
    chain with `missing`."""
    chain: list[dict[str, str]] = []
    seen = {(v.model, v.version)}
    parent = lineage_of(v).get("parent")
    while parent and len(chain) < MAX_ANCESTORS:
        key = (parent.get("model", ""), int(parent.get("version", "0") or 0))
        found = ctx.store.version(*key) if key not in seen else None
        chain.append(dict(parent) | ({} if found else {"missing": "true"}))
        if found is None:
            break
        seen.add(key)
        parent = lineage_of(found).get("parent")
    return chain


def history(ctx: Context, model: str, limit: int | None = None) -> list[Entry]:
    """The ledger of a model, oldest first."""
    entries = ctx.store.history(model, limit)
    if not entries and not ctx.store.has_model(model):
        raise missing_model(ctx, model)
    return entries
