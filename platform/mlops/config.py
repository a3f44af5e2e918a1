"""Params (what changes results, from params.yaml) and Settings (where things live).

The façade the rest of the code imports from: the sections live in `mlops.params`,
reading and error reporting in `mlops.params_file`, settings in `mlops.settings`.
"""

from mlops.model_params import (
    CNNParams,
    EarlyStoppingParams,
    MLPParams,
    ModelParams,
    RNNParams,
    ScheduleParams,
    TrainParams,
    TransformerParams,
)
from mlops.params import (
    NAME_PATTERN,
    PARAMS_FILE,
    DataParams,
    EvaluateParams,
    Params,
    PipelineParams,
    RegisterParams,
    SplitParams,
    ValidateParams,
)
from mlops.params_file import load_params, parse_params
from mlops.registry_params import GateParams, RegistryParams
from mlops.settings import ENV_PREFIX, Settings, find_project_root, redact

__all__ = [
    "ENV_PREFIX",
    "NAME_PATTERN",
    "PARAMS_FILE",
    "CNNParams",
    "DataParams",
    "EarlyStoppingParams",
    "EvaluateParams",
    "GateParams",
    "MLPParams",
    "ModelParams",
    "Params",
    "PipelineParams",
    "RNNParams",
    "RegisterParams",
    "RegistryParams",
    "ScheduleParams",
    "Settings",
    "SplitParams",
    "TrainParams",
    "TransformerParams",
    "ValidateParams",
    "find_project_root",
    "load_params",
    "parse_params",
    "redact",
]
