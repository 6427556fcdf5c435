"""Dyck-1 depth prediction: label every prefix of a balanced-parenthesis string with its depth.

Generation (the paper's procedure): for each sequence draw the number of pairs n uniformly from
1..max_pairs; emit 2n brackets left to right, opening with probability 0.55 whenever both an open
and a close are legal, otherwise the only legal bracket. Sequences are right-padded to ``ctx_len``
(padding positions are not scored). ``n_train + n_test`` sequences come from one
``numpy.random.default_rng(data_seed)`` stream and are split by a permutation from the same
stream. Duplicates are allowed, as in the paper: short strings recur, which is why Dyck test
*token* accuracy is high early and 0.95 is a soft grokking threshold.
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F

from .base import Task, chunks, eval_row

OPEN, CLOSE, PAD = 0, 1, 2
IGNORE = -100  # label of padding positions (F.cross_entropy's ignore_index)


def balanced_parentheses(rng: np.random.Generator, max_pairs: int, p_open: float = 0.55) -> list[int]:
    n_pairs = int(rng.integers(1, max_pairs + 1))
    seq, opened, depth = [], 0, 0
    for _ in range(2 * n_pairs):
        can_open, can_close = opened < n_pairs, depth > 0
        if can_open and (not can_close or rng.random() < p_open):
            seq.append(OPEN)
            opened += 1
            depth += 1
        else:
            seq.append(CLOSE)
            depth -= 1
    return seq


def dyck_dataset(n_train: int = 50, n_test: int = 5000, ctx_len: int = 24, max_pairs: int = 12,
                 data_seed: int = 0):
    """(x_train, y_train, x_test, y_test) int64 arrays of shape (n, ctx_len).

    x: bracket tokens, PAD after the string; y: depth after each bracket, IGNORE on padding.
    """
    if 2 * max_pairs > ctx_len:
        raise ValueError(f"max_pairs ({max_pairs}) needs ctx_len ≥ {2 * max_pairs}, got {ctx_len}")
    rng = np.random.default_rng(data_seed)
    n = n_train + n_test
    x = np.full((n, ctx_len), PAD, dtype=np.int64)
    y = np.full((n, ctx_len), IGNORE, dtype=np.int64)
    for i in range(n):
        seq = balanced_parentheses(rng, max_pairs)
        x[i, : len(seq)] = seq
        y[i, : len(seq)] = np.cumsum([1 if t == OPEN else -1 for t in seq])
    perm = rng.permutation(n)
    tr, te = perm[:n_train], perm[n_train:]
    return x[tr], y[tr], x[te], y[te]


class DyckTask(Task):
    name = "dyck"

    def __init__(self, n_train: int = 50, n_test: int = 5000, ctx_len: int = 24, max_pairs: int = 12,
                 data_seed: int = 0, eval_batch: int = 1024):
        self.ctx_len, self.max_pairs = ctx_len, max_pairs
        self.n_classes = max_pairs + 1
        xtr, ytr, xte, yte = dyck_dataset(n_train, n_test, ctx_len, max_pairs, data_seed)
        self.x_train, self.y_train = torch.from_numpy(xtr), torch.from_numpy(ytr)
        self.x_test, self.y_test = torch.from_numpy(xte), torch.from_numpy(yte)
        self.eval_batch = eval_batch

    def to(self, device):
        for k in ("x_train", "y_train", "x_test", "y_test"):
            setattr(self, k, getattr(self, k).to(device))
        return self

    def sample_batch(self, gen, batch_size):
        # Batch 50 from 50 sequences *with replacement* (the paper's sampler), not the full set.
        idx = torch.randint(len(self.x_train), (batch_size,), generator=gen).to(self.x_train.device)
        return self.x_train[idx], self.y_train[idx]

    @staticmethod
    def _loss(logits, y):
        return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), ignore_index=IGNORE)

    def loss(self, model, batch):
        x, y = batch
        return self._loss(model(x), y)

    @torch.no_grad()
    def _split_metrics(self, model, x, y, autocast):
        loss_sum, correct, tokens = 0.0, 0, 0
        for sl in chunks(len(x), self.eval_batch):
            with autocast():
                logits = model(x[sl])
            mask = y[sl] != IGNORE
            n = int(mask.sum())
            loss_sum += float(self._loss(logits, y[sl])) * n
            correct += int(((logits.argmax(-1) == y[sl]) & mask).sum())
            tokens += n
        return loss_sum / tokens, correct / tokens

    @torch.no_grad()
    def evaluate(self, model, step, autocast=None):
        autocast = autocast or nullcontext
        train_loss, train_acc = self._split_metrics(model, self.x_train, self.y_train, autocast)
        test_loss, test_acc = self._split_metrics(model, self.x_test, self.y_test, autocast)
        return eval_row(step, train_loss=train_loss, test_loss=test_loss, train_acc=train_acc,
                        test_acc=test_acc, grok_acc=test_acc, memo_acc=train_acc)
