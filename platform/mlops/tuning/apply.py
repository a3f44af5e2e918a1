"""`mlops sweep apply`: a study's best trial written into params.yaml's train section
(and its data section, for searched data params such as `data.tokenizer.vocab_size`),
so `dvc repro` trains it and `git diff` / `dvc params diff` show the change.

Only the searched values change; comments, order and layout of the file are kept
(ruamel.yaml's round trip), and a comment line above `train:` names the study and the
trial. The file is replaced atomically, and only once the new text reads back as valid
params holding exactly the trial's values. A study's default name hashes the train
params that are not searched, so applying its values keeps params.yaml on that study.
"""

from __future__ import annotations

import difflib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from mlops import workspace
from mlops.errors import MlopsError, UserError
from mlops.io import atomic_path
from mlops.params import Params, is_data_param, load_params
from mlops.settings import Settings, redact
from mlops.tuning.objective import study_name
from mlops.tuning.search_space import derive, derive_data
from mlops.tuning.storage import storage

if TYPE_CHECKING:
    import optuna

MARK = "# mlops sweep apply:"


@dataclass(frozen=True)
class Change:
    """One train param: its value in params.yaml before and after."""

    param: str
    old: Any
    new: Any


@dataclass(frozen=True)
class Applied:
    """What `apply` found and did."""

    study: str
    trial: int
    value: float
    metric: str
    params_file: str
    changes: list[Change]
    diff: str
    written: bool
    study_of_params: str  # the study params.yaml names once the values are in
    tune_overrides: bool  # tune.n_trials > 0 and the tune stage's study is another one


def load_study(settings: Settings, name: str) -> optuna.Study:
    """The study `name` of the configured storage; one line if there is none."""
    import optuna

    store = storage(settings.optuna_storage, heartbeat=False)
    try:
        return optuna.load_study(study_name=name, storage=store)
    except KeyError:
        names = sorted(optuna.get_all_study_names(store))
        known = ", ".join(names[:5]) + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")
        raise UserError(
            f"study {name!r}: not found in {redact(settings.optuna_storage)} "
            f"(studies: {known or 'none yet'})"
        ) from None


def _leaf(tree: dict[str, Any], path: str) -> tuple[bool, Any]:
    node: Any = tree
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return not isinstance(node, dict), node


def _tree(train: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """Searched paths to values: train paths from the train section's root, data paths
    (`data.…`) under `data` (the train section has no `data` key)."""
    return {**train, "data": data}


def _searchable(params: Params) -> dict[str, Any]:
    return _tree(params.train.model_dump(mode="json"), params.data.model_dump(mode="json"))


def _derived(params: Params, values: dict[str, Any]) -> Params:
    return params.model_copy(
        update={"train": derive(params.train, values), "data": derive_data(params.data, values)}
    )


def _new_values(params: Params, name: str, trial: Any) -> dict[str, Any]:
    """The trial's values as params.yaml will hold them (validated)."""
    current = _searchable(params)
    for path in sorted(trial.params):
        found, _ = _leaf(current, path)
        if not found:
            section = "data" if is_data_param(path) else "train"
            raise UserError(
                f"study {name}: trial {trial.number} searched {path!r}, which is not a "
                f"param of params.yaml's {section} section (a study of another pipeline?)"
            )
    try:
        derived = _searchable(_derived(params, dict(trial.params)))
    except ValueError as exc:
        first = str(exc).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise UserError(
            f"study {name}: trial {trial.number}'s values do not make valid params: {detail}"
        ) from None
    return {path: _leaf(derived, path)[1] for path in sorted(trial.params)}


def _yaml() -> Any:
    y = YAML()
    y.preserve_quotes = True
    y.width = 1_000_000  # never fold a line

    def none(r: Any, _value: None) -> Any:
        return r.represent_scalar("tag:yaml.org,2002:null", "null")

    def real(r: Any, value: float) -> Any:
        text = repr(float(value))  # the shortest text that reads back the same
        mantissa = text.split("e")[0]
        if "e" in text and "." not in mantissa:
            text = text.replace("e", ".0e", 1)  # 1e-05 -> 1.0e-05: a float in any YAML
        return r.represent_scalar("tag:yaml.org,2002:float", text)

    y.representer.add_representer(type(None), none)
    y.representer.add_representer(float, real)
    return y


def _set(tree: Any, path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = tree
    for part in parents:
        if node.get(part) is None:
            node[part] = CommentedMap()
        node = node[part]
    node[leaf] = value


def rewrite(text: str, values: dict[str, Any], comment: str) -> str:
    """`text` (params.yaml) with each dotted train path (and data path, `data.…`) set to
    its value and `comment` on the line above `train:` (replacing an earlier one of ours)."""

    y = _yaml()
    data = y.load(text)
    if data is None:
        data = CommentedMap()
    if data.get("train") is None:
        data["train"] = CommentedMap()
    for path, value in values.items():
        _set(data if is_data_param(path) else data["train"], path, value)
    out = io.StringIO()
    y.dump(data, out)
    lines = [line for line in out.getvalue().splitlines() if not line.startswith(MARK)]
    at = next(i for i, line in enumerate(lines) if re.match(r"train\s*:", line))
    lines.insert(at, f"{MARK} {comment}")
    blank = len(text) - len(text.lstrip("\n"))  # leading blank lines, which ruamel drops
    return "\n" * blank + "\n".join(lines).lstrip("\n") + "\n"


def _plain(text: str) -> str:
    """`text` fit for one comment line: printable ASCII only, at most 200 characters (a
    study's name comes from a shared storage: a line break would add YAML of its own)."""
    return re.sub(r"[^\x20-\x7e]", "?", text)[:200]


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def apply(settings: Settings, name: str | None, dry_run: bool = False) -> Applied:
    """Write the best trial of study `name` (default: the study of params.yaml) into
    params.yaml's train section; with `dry_run`, only say what would change."""

    path = (settings.root / workspace.PARAMS).resolve()
    params = load_params(path)
    name = name or study_name(params)
    study = load_study(settings, name)
    if len(study.directions) != 1:
        raise UserError(f"study {name}: {len(study.directions)} objectives; apply takes one")
    try:
        best = study.best_trial
    except ValueError:
        best = None
    if best is None or best.value is None:
        raise UserError(f"study {name}: no complete trial yet; nothing to apply")
    value = float(best.value)
    values = _new_values(params, name, best)
    before = _searchable(params)
    changes = [
        Change(p, _leaf(before, p)[1], v)
        for p, v in values.items()
        if not _same(_leaf(before, p)[1], v)
    ]
    metric = (study.metric_names or ["value"])[0]
    text = path.read_text(encoding="utf-8")
    comment = f"study {_plain(name)}, trial {best.number} ({_plain(metric)} {value:.4f})"
    new_text = rewrite(text, values, comment) if changes else text
    diff = "".join(
        difflib.unified_diff(
            text.splitlines(True), new_text.splitlines(True), "a/params.yaml", "b/params.yaml"
        )
    )
    written = bool(changes) and not dry_run
    if written:
        _write(path, text, new_text, values)
    after = _derived(params, dict(best.params))
    return Applied(
        name, best.number, value, metric, str(path), changes, diff, written,
        study_name(after), params.tune.n_trials > 0 and study_name(after) != name,
    )  # fmt: skip


def _write(path: Path, text: str, new_text: str, values: dict[str, Any]) -> None:
    """Replace params.yaml atomically, once the new text reads back with the values."""
    mode = path.stat().st_mode & 0o7777
    with atomic_path(path) as tmp:
        tmp.write_text(new_text, encoding="utf-8")
        os.chmod(tmp, mode)
        check = _searchable(load_params(tmp))
        wrong = [p for p, v in values.items() if not _same(_leaf(check, p)[1], v)]
        if wrong:
            raise MlopsError(f"{path}: the rewritten file would not hold {wrong}; nothing written")
        if path.read_text(encoding="utf-8") != text:
            raise MlopsError(f"{path}: changed while applying; nothing written, run it again")
