"""params.yaml, typed: what changes results (DVC tracks every key).

The one import point for params: `from mlops.params import Params, load_params`. The
section modules behind it are private: `_sections` (the top level and the small
sections), `_model` (train: families, schedule, early stopping), `_tune` (the search
space), `_registry` (stages and gates), `_monitor` (drift thresholds), and `_file`
(reading params.yaml bounded, and errors as one line naming the key).
"""

from mlops.params._file import describe_error, load_params, parse_params
from mlops.params._model import (
    AugmentParams,
    CNNParams,
    EarlyStoppingParams,
    LoaderParams,
    MLPParams,
    ModelParams,
    RNNParams,
    ScheduleParams,
    TrainParams,
    TransformerParams,
)
from mlops.params._monitor import DriftParams, MonitorParams
from mlops.params._registry import (
    HIGHER_IS_BETTER,
    NO_STAGE,
    GateParams,
    LiveGateParams,
    RegistryParams,
)
from mlops.params._sections import (
    NAME_PATTERN,
    PARAMS_FILE,
    DataParams,
    EvaluateParams,
    ImageParams,
    Params,
    PipelineParams,
    RegisterParams,
    SplitParams,
    SweepScheduleParams,
    TokenizerParams,
    ValidateParams,
)
from mlops.params._tune import (
    DATA_PARAMS,
    Distribution,
    TuneParams,
    check_space,
    is_data_param,
    require_space,
)

__all__ = [
    "DATA_PARAMS",
    "HIGHER_IS_BETTER",
    "NAME_PATTERN",
    "NO_STAGE",
    "PARAMS_FILE",
    "AugmentParams",
    "CNNParams",
    "DataParams",
    "Distribution",
    "DriftParams",
    "EarlyStoppingParams",
    "EvaluateParams",
    "GateParams",
    "ImageParams",
    "LiveGateParams",
    "LoaderParams",
    "MLPParams",
    "ModelParams",
    "MonitorParams",
    "Params",
    "PipelineParams",
    "RNNParams",
    "RegisterParams",
    "RegistryParams",
    "ScheduleParams",
    "SplitParams",
    "SweepScheduleParams",
    "TokenizerParams",
    "TrainParams",
    "TransformerParams",
    "TuneParams",
    "ValidateParams",
    "check_space",
    "describe_error",
    "is_data_param",
    "load_params",
    "parse_params",
    "require_space",
]
