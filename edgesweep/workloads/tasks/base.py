"""What the training loop needs from a task, and the evaluation-row layout.

A task owns its (generated or loaded) data, samples training batches from a generator the
training loop passes in (so the data order is part of the checkpointed RNG state), computes the
training loss, and evaluates a model into an *eval row* whose keys are exactly the "Eval row" of
docs/CONTRACTS.md.
"""

from __future__ import annotations

import math
from typing import Any

import torch

# Keys of one evaluation row, in order (docs/CONTRACTS.md, "Eval row").
EVAL_KEYS = (
    "step", "train_loss", "test_loss", "train_acc", "test_acc",
    "train_seq_acc", "test_seq_acc", "test_task_acc", "grok_acc", "memo_acc",
)

NAN = math.nan


def eval_row(step: int, **values: Any) -> dict:
    """An eval row with every contract key present: unset floats are NaN, the list is None."""
    row = {k: NAN for k in EVAL_KEYS}
    row["step"] = int(step)
    row["test_task_acc"] = None
    for k, v in values.items():
        if k not in row:
            raise KeyError(f"{k!r} is not an eval-row key; allowed: {EVAL_KEYS}")
        row[k] = v
    return row


class Task:
    """Interface every task implements (duck-typed; subclassing is optional)."""

    name: str = "task"

    def to(self, device: torch.device) -> "Task":
        """Move the stored tensors to ``device`` (called once before training)."""
        raise NotImplementedError

    def sample_batch(self, gen: torch.Generator, batch_size: int):
        """A training batch drawn with ``gen`` (a CPU generator owned by the training loop)."""
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, batch) -> torch.Tensor:
        """Scalar training loss of ``model`` on ``batch``."""
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, step: int, autocast=None) -> dict:
        """Eval row (see :data:`EVAL_KEYS`) on the task's fixed train and test sets."""
        raise NotImplementedError


def chunks(n: int, size: int):
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))
