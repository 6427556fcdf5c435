"""Workloads: the paper's tasks (generated data), model families, optimisers and training loop.

Knows nothing of Ray, Parquet or the spectral monitor beyond the callback interface of
:func:`train`. Public entry points::

    from edgesweep.workloads import TrainConfig, train, describe_table
    result = train(TrainConfig("mod_add", preset="laptop", weight_decay=1.0, seed=42))

Importing this package imports no torch: the names (workloads, families, presets, configs) come
from torch-free modules, and the torch parts load on first use of one of their names.
"""

from importlib import import_module

from .catalog import (DECAY_MODES, MODULAR_OPS, OPTIMIZERS, PRESETS, SCHEDULES, WORKLOADS, family,
                      get_workload, model_config, task_config)
from .train_config import TrainConfig

_LAZY = {
    "TrainResult": ".training", "train": ".training", "compute_environment": ".training",
    "resolve_device": ".training",
    "describe_table": ".table", "parameter_counts": ".table", "parameter_names": ".table",
    "ATTENTION_PATTERN": ".table", "build_model": ".registry", "build_task": ".registry",
    "build_optimizer": ".optim", "CombinedOptimizer": ".optim", "muon_parameters": ".optim",
    "lr_factor": ".optim",
}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "TrainConfig", "TrainResult", "train", "compute_environment", "resolve_device",
    "describe_table", "parameter_counts", "parameter_names",
    "WORKLOADS", "PRESETS", "MODULAR_OPS", "OPTIMIZERS", "DECAY_MODES", "SCHEDULES",
    "ATTENTION_PATTERN", "family", "get_workload", "model_config", "task_config", "build_model",
    "build_task", "build_optimizer", "CombinedOptimizer", "muon_parameters", "lr_factor",
]
