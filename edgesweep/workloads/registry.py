"""Building the models and tasks that :mod:`.catalog` describes (this part needs torch)."""

from __future__ import annotations

from dataclasses import asdict

from .catalog import (MODULAR_OPS, PRESETS, WORKLOADS, get_workload, model_config,  # noqa: F401
                      model_keys, task_config, task_keys)
from .models import DyckTransformer, GPT, ModArithTransformer, Seq2SeqTransformer
from .tasks import DyckTask, ModularTask, ScanTask, TextTask


def build_model(workload: str, model_cfg):
    fam = get_workload(workload).family
    cls = {"modular": ModArithTransformer, "dyck": DyckTransformer, "scan": Seq2SeqTransformer, "lm": GPT}[fam]
    return cls(model_cfg)


def build_task(workload: str, preset: str, task_overrides: dict, data_seed: int, model_cfg=None):
    spec = get_workload(workload)
    kw = asdict(task_config(workload, preset, task_overrides))
    if spec.family == "modular":
        return ModularTask(MODULAR_OPS[workload], data_seed=data_seed, **kw)
    if spec.family == "dyck":
        return DyckTask(data_seed=data_seed, **kw)
    if spec.family == "scan":
        return ScanTask(data_seed=data_seed, **kw)
    vocab = model_cfg.vocab_size if model_cfg is not None else model_config(workload, preset, task_overrides, {}).vocab_size
    return TextTask(vocab_size=vocab, data_seed=data_seed, **kw)
