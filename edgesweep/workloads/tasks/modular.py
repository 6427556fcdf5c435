"""Modular arithmetic (Power et al. 2022 style) for single-task and multitask grokking.

Every example is an ordered pair (a, b) of residues mod p; the label is op(a, b) mod p. The whole
table is enumerated and split once at random (``data_seed``) into train and test.

Operations (edgesweep names):

* ``add`` a + b, ``sub`` a − b, ``mul`` a · b, ``sq`` a² + b² — the four that grok in the paper;
* ``sq_cross`` a² + ab + b², ``cube`` a³ + ab — the paper's never-grok controls.

Pairs: all p² ordered pairs, except that any task involving ``mul`` uses the (p−1)² pairs of
nonzero residues (a · 0 = 0 carries no information about b; the paper's multiplication and
multitask scripts do the same). Multitask targets have one column per op and share the pairs.
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F

from ..configs import MAX_MODULUS
from .base import Task, chunks, eval_row

OPS = {
    "add": lambda a, b, p: (a + b) % p,
    "sub": lambda a, b, p: (a - b) % p,
    "mul": lambda a, b, p: (a * b) % p,
    "sq": lambda a, b, p: (a * a + b * b) % p,
    "sq_cross": lambda a, b, p: (a * a + a * b + b * b) % p,
    "cube": lambda a, b, p: (a * a * a + a * b) % p,
}


def modular_pairs(p: int, nonzero: bool = False) -> np.ndarray:
    """All ordered pairs (a, b) as an (N, 2) int64 array, a-major; residues 1..p-1 if nonzero."""
    lo = 1 if nonzero else 0
    r = np.arange(lo, p, dtype=np.int64)
    a, b = np.meshgrid(r, r, indexing="ij")
    return np.stack([a.ravel(), b.ravel()], axis=1)


def modular_dataset(ops: tuple[str, ...], p: int, train_frac: float, data_seed: int):
    """(x_train, y_train, x_test, y_test) numpy arrays; y has one column per op.

    The split is a uniformly random permutation from ``numpy.random.default_rng(data_seed)``;
    the first ``floor(train_frac · N)`` pairs train.
    """
    for op in ops:
        if op not in OPS:
            raise ValueError(f"unknown modular op {op!r}; allowed: {sorted(OPS)}")
    if not 0.0 < train_frac < 1.0:
        raise ValueError(f"train_frac must be in (0, 1), got {train_frac}")
    # Arithmetic below is in int64: a³ with p ≤ MAX_MODULUS is far from overflow.
    if not 2 <= p <= MAX_MODULUS:
        raise ValueError(f"p must be in [2, {MAX_MODULUS}], got {p}")
    x = modular_pairs(p, nonzero="mul" in ops)
    y = np.stack([OPS[op](x[:, 0], x[:, 1], p) for op in ops], axis=1)
    perm = np.random.default_rng(data_seed).permutation(len(x))
    n_train = int(train_frac * len(x))
    tr, te = perm[:n_train], perm[n_train:]
    return x[tr], y[tr], x[te], y[te]


class ModularTask(Task):
    """One or more modular operations on shared pairs; the model returns (B, n_tasks, p) logits."""

    def __init__(self, ops=("add",), p: int = 97, train_frac: float = 0.5, data_seed: int = 0,
                 eval_batch: int = 8192):
        self.ops = tuple(ops)
        self.p = p
        self.name = "+".join(self.ops)
        xtr, ytr, xte, yte = modular_dataset(self.ops, p, train_frac, data_seed)
        self.x_train, self.y_train = torch.from_numpy(xtr), torch.from_numpy(ytr)
        self.x_test, self.y_test = torch.from_numpy(xte), torch.from_numpy(yte)
        self.eval_batch = eval_batch

    @property
    def n_tasks(self) -> int:
        return len(self.ops)

    def to(self, device):
        for k in ("x_train", "y_train", "x_test", "y_test"):
            setattr(self, k, getattr(self, k).to(device))
        return self

    def sample_batch(self, gen, batch_size):
        # Sampling with replacement, as the paper's scripts do (batch 512 from ~4.7k pairs).
        idx = torch.randint(len(self.x_train), (batch_size,), generator=gen).to(self.x_train.device)
        return self.x_train[idx], self.y_train[idx]

    def _loss(self, logits, y):
        # Sum of per-task cross-entropies: the multitask objective of the paper's scripts
        # (identical to plain cross-entropy when there is one task).
        return sum(F.cross_entropy(logits[:, t].float(), y[:, t]) for t in range(self.n_tasks))

    def loss(self, model, batch):
        x, y = batch
        return self._loss(model(x), y)

    @torch.no_grad()
    def _split_metrics(self, model, x, y, autocast):
        loss_sum, correct = 0.0, torch.zeros(self.n_tasks, dtype=torch.float64)
        for sl in chunks(len(x), self.eval_batch):
            with autocast():
                logits = model(x[sl])
            loss_sum += float(self._loss(logits, y[sl])) * (sl.stop - sl.start)
            correct += (logits.argmax(-1) == y[sl]).sum(0).double().cpu()
        return loss_sum / len(x), (correct / len(x)).tolist()

    @torch.no_grad()
    def evaluate(self, model, step, autocast=None):
        autocast = autocast or nullcontext
        train_loss, train_task = self._split_metrics(model, self.x_train, self.y_train, autocast)
        test_loss, test_task = self._split_metrics(model, self.x_test, self.y_test, autocast)
        row = eval_row(
            step,
            train_loss=train_loss, test_loss=test_loss,
            train_acc=sum(train_task) / self.n_tasks, test_acc=sum(test_task) / self.n_tasks,
            grok_acc=min(test_task), memo_acc=min(train_task),
        )
        if self.n_tasks > 1:
            row["test_task_acc"] = test_task
        return row
