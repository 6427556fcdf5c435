"""Tasks with generated (or local) data; every generator is deterministic given ``data_seed``."""

from .base import EVAL_KEYS, Task, eval_row
from .dyck import DyckTask, dyck_dataset
from .modular import OPS, ModularTask, modular_dataset, modular_pairs
from .scan import ScanTask, interpret, scan_commands, simple_split
from .text import TextTask, load_tokens, synthetic_stories

__all__ = [
    "EVAL_KEYS", "Task", "eval_row",
    "OPS", "ModularTask", "modular_dataset", "modular_pairs",
    "DyckTask", "dyck_dataset",
    "ScanTask", "interpret", "scan_commands", "simple_split",
    "TextTask", "load_tokens", "synthetic_stories",
]
