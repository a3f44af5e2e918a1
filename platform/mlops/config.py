"""Params (what changes results, from params.yaml) and Settings (where things live).

`Params` is a frozen pydantic model with `extra="forbid"` and strict types: a
wrong type, an unknown key, an out-of-range value, NaN or broken YAML is turned
into one `UserError` line naming the file, the key and the value. `Settings`
comes from `MLOPS_*` environment variables with embedded defaults, every path
resolved to an absolute one so copies of the repo (`dvc exp run --temp`) log into
the same stores.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from mlops.errors import UserError

PARAMS_FILE = "params.yaml"
NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$"

Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Fraction = Annotated[float, Field(gt=0.0, lt=1.0)]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


class PipelineParams(_Section):
    """Names the pipeline: its MLflow experiment and, by default, its registered model."""

    name: Name = "digits"


class DataParams(_Section):
    """Where the data comes from: `builtin:digits`, or a CSV/Parquet file with a target column."""

    source: str = Field(default="builtin:digits", min_length=1)
    target: str = Field(default="target", min_length=1)
    max_rows: Annotated[int, Field(ge=10)] | None = None
    seed: Seed = 0

    @field_validator("source")
    @classmethod
    def _known_source(cls, source: str) -> str:
        if source.startswith("builtin:"):
            if source != "builtin:digits":
                raise ValueError("unknown builtin data set (known: builtin:digits)")
        elif Path(source).suffix.lower() not in {".csv", ".parquet", ".pq"}:
            raise ValueError("must be builtin:digits or a .csv/.parquet file")
        return source


class ValidateParams(_Section):
    """Thresholds under which the data is declared unusable."""

    min_rows_per_class: Annotated[int, Field(ge=1)] = 10
    max_missing_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    max_duplicate_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    max_classes: Annotated[int, Field(ge=2, le=10_000)] = 1000


class SplitParams(_Section):
    """Stratified train/val/test split."""

    seed: Seed = 42
    val_fraction: Fraction = 0.15
    test_fraction: Fraction = 0.15

    @model_validator(mode="after")
    def _room_for_training(self) -> SplitParams:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError(
                f"val_fraction + test_fraction = {self.val_fraction + self.test_fraction:g} "
                "must leave at least 10% for training"
            )
        return self


class MLPParams(_Section):
    """A multi-layer perceptron over the flattened features."""

    family: Literal["mlp"] = "mlp"
    hidden_sizes: Annotated[list[Annotated[int, Field(ge=1, le=65_536)]], Field(max_length=16)] = [
        256,
        128,
    ]
    activation: Literal["relu", "gelu", "tanh", "silu"] = "relu"
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    batch_norm: bool = False


class TrainParams(_Section):
    """The training job."""

    seed: Seed = 42
    epochs: Annotated[int, Field(ge=1, le=100_000)] = 60
    batch_size: Annotated[int, Field(ge=1, le=1_048_576)] = 64
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    learning_rate: Annotated[float, Field(gt=0.0, le=10.0)] = 1e-3
    weight_decay: Annotated[float, Field(ge=0.0, le=1.0)] = 1e-4
    patience: Annotated[int, Field(ge=0)] = 15
    threads: Annotated[int, Field(ge=0, le=1024)] = 1
    model: MLPParams = MLPParams()


class EvaluateParams(_Section):
    """Evaluation on the held-out test split."""

    primary_metric: Literal["accuracy", "f1_macro"] = "accuracy"


class RegisterParams(_Section):
    """Registration in the MLflow model registry."""

    model_name: Name | None = None


class Params(_Section):
    """Every section of params.yaml; each stage reads its own."""

    pipeline: PipelineParams = PipelineParams()
    data: DataParams = DataParams()
    validate_: ValidateParams = Field(default=ValidateParams(), alias="validate")
    split: SplitParams = SplitParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    register_: RegisterParams = Field(default=RegisterParams(), alias="register")

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        # `train:` with nothing under it means "all defaults", as an empty file does.
        if isinstance(data, dict):
            return {k: ({} if v is None else v) for k, v in data.items()}
        return data

    @property
    def model_name(self) -> str:
        """The registered model's name: `register.model_name`, else the pipeline's name."""
        return self.register_.model_name or self.pipeline.name

    def as_dict(self) -> dict[str, Any]:
        """Plain values, keyed as in params.yaml."""
        return self.model_dump(mode="json", by_alias=True)


class _Loader(yaml.SafeLoader):
    """Safe YAML loader with YAML 1.2 core-schema scalars (as DVC reads params.yaml:
    `1e-3` is a float, `010` is ten, `yes` is a string) that refuses duplicate keys
    instead of silently keeping the last one."""


_CORE_SCHEMA = [
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    (
        "tag:yaml.org,2002:float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+0123456789.",
    ),
]
_REPLACED = {tag for tag, _, _ in _CORE_SCHEMA}
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _REPLACED]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _tag, _pattern, _first in _CORE_SCHEMA:
    _Loader.add_implicit_resolver(_tag, re.compile(_pattern), list(_first))


def _construct_int(loader: _Loader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node))
    if text.startswith(("0o", "0x")):
        return int(text[2:], 8 if text[1] == "o" else 16)
    return int(text)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                "a key must be a plain value, not a list or mapping",
                key_node.start_mark,
            ) from None
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    loader.flatten_mapping(node)
    return loader.construct_mapping(node)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


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


def _describe(error: Mapping[str, Any]) -> str:
    key = _key_path(tuple(error["loc"]))
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{key}: unknown key"
    if kind == "missing":
        return f"{key}: missing"
    msg = str(error["msg"]).removeprefix("Value error, ")
    if kind == "finite_number":
        msg = "must be a finite number"
    elif kind == "string_pattern_mismatch":
        msg = "must start with a letter and hold only letters, digits, '_', '.', '-' (max 63)"
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
        raise UserError(f"{source}: {_describe(errors[0])}{more}") from None


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate params.yaml; any problem becomes one `UserError` line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read: {exc}") from None
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}:{where}: invalid YAML: {problem}") from None
    return parse_params(data, source=str(path))


# --------------------------------------------------------------------------- settings

ENV_PREFIX = "MLOPS_"
SettingsKind = Literal["home", "tracking_uri", "artifact_root", "optuna_storage", "database_url"]


def find_project_root(start: Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    """The repository the stores belong to.

    `DVC_ROOT` wins (DVC sets it for stage commands, and for `--temp`/`--queue`
    experiments points it at the parent repo); otherwise the nearest ancestor with a
    `.dvc/` folder, skipping DVC's own temporary experiment copies; otherwise `start`.
    """
    env = os.environ if env is None else env
    if env.get("DVC_ROOT"):
        return Path(env["DVC_ROOT"]).resolve()
    here = (start or Path.cwd()).resolve()
    marker = os.sep + os.path.join(".dvc", "tmp", "exps") + os.sep
    text = str(here) + os.sep
    if marker in text:
        return Path(text.split(marker, 1)[0])
    for candidate in (here, *here.parents):
        if (candidate / ".dvc").is_dir():
            return candidate
    return here


def _sqlite_url(value: str, base: Path) -> str:
    if value.startswith("sqlite:///"):
        raw = value.removeprefix("sqlite:///")
        if raw.startswith("/") or raw == ":memory:":
            return value
        return f"sqlite:///{(base / raw).resolve()}"
    if "://" in value:
        return value
    return f"sqlite:///{(base / value).resolve()}"


def _file_uri(value: str, base: Path) -> str:
    if value.startswith("file://"):
        raw = value.removeprefix("file://")
        return (
            Path(raw).resolve().as_uri() if raw.startswith("/") else (base / raw).resolve().as_uri()
        )
    if "://" in value:
        return value
    return (base / value).resolve().as_uri()


@dataclass(frozen=True)
class Settings:
    """Where things live. Read from `MLOPS_*` variables; embedded defaults under `home`."""

    root: Path
    home: Path
    tracking_uri: str
    artifact_root: str
    optuna_storage: str
    database_url: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Settings:
        """Build settings; relative paths are taken from the project root, never the cwd."""
        env = os.environ if env is None else env
        root = find_project_root(cwd, env)
        home_raw = env.get(f"{ENV_PREFIX}HOME", "").strip()
        home = (root / home_raw).resolve() if home_raw else root / ".mlops"
        get = lambda key: env.get(f"{ENV_PREFIX}{key}", "").strip()  # noqa: E731
        return cls(
            root=root,
            home=home,
            tracking_uri=_sqlite_url(get("TRACKING_URI") or str(home / "mlflow.db"), root),
            artifact_root=_file_uri(get("ARTIFACT_ROOT") or str(home / "artifacts"), root),
            optuna_storage=_sqlite_url(get("OPTUNA_STORAGE") or str(home / "optuna.db"), root),
            database_url=_sqlite_url(get("DATABASE_URL") or str(home / "mlops.db"), root),
        )

    @property
    def embedded(self) -> bool:
        """True when tracking runs on the local SQLite file (no server to start)."""
        return self.tracking_uri.startswith("sqlite:")

    def as_dict(self) -> dict[str, str]:
        """Values for display, with any password in a URL redacted."""
        return {
            "root": str(self.root),
            "home": str(self.home),
            "tracking_uri": redact(self.tracking_uri),
            "artifact_root": redact(self.artifact_root),
            "optuna_storage": redact(self.optuna_storage),
            "database_url": redact(self.database_url),
        }


def redact(url: str) -> str:
    """Hide the password in `scheme://user:password@host/...` (the password may hold
    `/` or `@`: the host starts after the last `@` of the URL, as SQLAlchemy reads it)."""
    return re.sub(r"^([A-Za-z][\w+.-]*://[^:/@]*):.*@(?=[^@]*$)", r"\1:***@", url)
