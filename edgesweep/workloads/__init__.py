"""Workloads: the paper's tasks (generated data), model families, optimisers and training loop.

Knows nothing of Ray, Parquet or the spectral monitor beyond the callback interface of
:func:`train`. Public entry points::

    from edgesweep.workloads import TrainConfig, train, describe_table
    result = train(TrainConfig("mod_add", preset="laptop", weight_decay=1.0, seed=42))
"""

from .optim import CombinedOptimizer, build_optimizer, lr_factor, muon_parameters
from .registry import MODULAR_OPS, PRESETS, WORKLOADS, build_model, build_task, get_workload, model_config
from .table import ATTENTION_PATTERN, describe_table, parameter_counts
from .training import TrainConfig, TrainResult, train

__all__ = [
    "TrainConfig", "TrainResult", "train", "describe_table", "parameter_counts",
    "WORKLOADS", "PRESETS", "MODULAR_OPS", "ATTENTION_PATTERN",
    "get_workload", "model_config", "build_model", "build_task",
    "build_optimizer", "CombinedOptimizer", "muon_parameters", "lr_factor",
]
