"""Params (what changes results, from params.yaml) and Settings (where things live).

The façade the rest of the code imports from: the sections live in `mlops.params`,
reading and error reporting in `mlops.params_file`, settings in `mlops.settings`.
"""

from mlops.params import (
    NAME_PATTERN,
    PARAMS_FILE,
    DataParams,
    EvaluateParams,
    MLPParams,
    Params,
    PipelineParams,
    RegisterParams,
    SplitParams,
    TrainParams,
    ValidateParams,
)
from mlops.params_file import load_params, parse_params
from mlops.settings import ENV_PREFIX, Settings, find_project_root, redact

__all__ = [
    "ENV_PREFIX",
    "NAME_PATTERN",
    "PARAMS_FILE",
    "DataParams",
    "EvaluateParams",
    "MLPParams",
    "Params",
    "PipelineParams",
    "RegisterParams",
    "Settings",
    "SplitParams",
    "TrainParams",
    "ValidateParams",
    "find_project_root",
    "load_params",
    "parse_params",
    "redact",
]
