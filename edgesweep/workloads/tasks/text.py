"""Next-token language modelling on a local corpus (TinyStories-style and GPT-2 runs).

Sources, chosen by ``corpus`` (task override):

* ``None`` — a built-in, deterministic generator of short TinyStories-like stories
  (:func:`synthetic_stories`), so tests and demos need nothing from the network;
* a text file (any extension but the two below) — UTF-8 bytes, **byte-level tokenizer**
  (vocabulary 256: token id = byte value);
* ``*.bin`` — a flat uint16 token array (nanoGPT's ``prepare.py`` format, e.g. GPT-2 BPE ids);
* ``*.npy`` — a 1-D integer token array.

Token files are memory-mapped, so corpora larger than RAM work. The last ``val_fraction`` of the
token stream is the held-out split. Training batches are random windows of ``ctx_len + 1`` tokens
(offsets drawn from the training loop's generator); evaluation uses ``eval_batches`` fixed
batches of windows per split, drawn once from ``data_seed``, so successive evaluations are
comparable. Accuracy is next-token arg-max accuracy.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .base import Task, eval_row

BYTE_VOCAB = 256

_NAMES = ("Lily", "Tom", "Mia", "Ben", "Sara", "Max", "Anna", "Leo", "Zoe", "Sam", "Emma", "Jack")
_ANIMALS = ("cat", "dog", "bird", "frog", "bunny", "fox", "duck", "bear")
_OBJECTS = ("ball", "kite", "box", "hat", "cake", "book", "flower", "boat", "toy car", "red cup")
_PLACES = ("park", "garden", "forest", "beach", "kitchen", "school", "river", "hill")
_ADJ = ("happy", "sad", "big", "little", "kind", "brave", "shy", "funny", "tired", "curious")
_FEEL = ("happy", "sad", "scared", "proud", "excited", "sorry", "surprised")
_VERBS = ("played", "ran", "jumped", "sang", "danced", "looked around", "laughed", "waited")


def synthetic_stories(n_chars: int, seed: int = 0) -> str:
    """Deterministic TinyStories-like text of at least ``n_chars`` characters (ASCII).

    Each story has a small causal structure (a character, a wanted object, a place, a problem,
    a resolution) so that a language model has something to learn beyond letter frequencies.
    """
    rng = np.random.default_rng(seed)
    pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
    parts, total = [], 0
    while total < n_chars:
        name, friend = pick(_NAMES), pick(_NAMES)
        animal, obj, place = pick(_ANIMALS), pick(_OBJECTS), pick(_PLACES)
        adj, feel, verb = pick(_ADJ), pick(_FEEL), pick(_VERBS)
        s = [f"Once upon a time, there was a {adj} {animal} named {name}."]
        s.append(f"{name} liked to go to the {place} every day.")
        if rng.random() < 0.5:
            s.append(f"One day, {name} found a {obj} in the {place}.")
            s.append(f"{name} was very {feel}.")
            s.append(f"{name} showed the {obj} to {friend}, and they {verb} together.")
        else:
            s.append(f"One day, {name} lost the {obj}.")
            s.append(f"{name} felt {feel} and asked {friend} for help.")
            s.append(f"{friend} looked in the {place} and found the {obj}.")
            s.append(f'"Thank you, {friend}!" said {name}.')
        s.append(f"From that day on, {name} and {friend} were best friends. The end.\n\n")
        story = " ".join(s)
        parts.append(story)
        total += len(story)
    return "".join(parts)


def load_tokens(corpus: str | Path | None, n_chars: int, data_seed: int) -> tuple[np.ndarray, str]:
    """(1-D token array, description). See the module docstring for the formats."""
    if corpus is None:
        text = synthetic_stories(n_chars, seed=data_seed)
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8), f"built-in synthetic stories ({len(text):,} chars, byte tokens)"
    path = Path(corpus).expanduser()
    if not path.is_file():
        raise ValueError(f"corpus file not found: {path}")
    if path.suffix == ".bin":
        return np.memmap(path, dtype=np.uint16, mode="r"), f"{path} (uint16 tokens)"
    if path.suffix == ".npy":
        arr = np.load(path, mmap_mode="r")
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{path}: expected a 1-D integer token array, got {arr.dtype} {arr.shape}")
        return arr, f"{path} (npy tokens)"
    return np.fromfile(path, dtype=np.uint8), f"{path} (byte tokens)"


class TextTask(Task):
    name = "text"

    def __init__(self, corpus: str | None = None, ctx_len: int = 256, vocab_size: int = BYTE_VOCAB,
                 val_fraction: float = 0.1, corpus_chars: int = 2_000_000, eval_batches: int = 8,
                 eval_batch_size: int = 16, data_seed: int = 0):
        tokens, self.description = load_tokens(corpus, corpus_chars, data_seed)
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        n_val = int(len(tokens) * val_fraction)
        self.train_tokens, self.val_tokens = tokens[: len(tokens) - n_val], tokens[len(tokens) - n_val:]
        for split, arr in (("train", self.train_tokens), ("validation", self.val_tokens)):
            if len(arr) < ctx_len + 2:
                raise ValueError(f"{split} split has {len(arr)} tokens; needs more than ctx_len + 1 = {ctx_len + 1}")
        top = int(tokens.max())
        if top >= vocab_size:
            raise ValueError(f"corpus has token id {top} but the model's vocab_size is {vocab_size}; "
                             "set model_overrides={'vocab_size': ...}")
        self.ctx_len, self.vocab_size = ctx_len, vocab_size
        rng = np.random.default_rng([data_seed, 2])
        n_eval = eval_batches * eval_batch_size
        self._eval_offsets = {
            "train": rng.integers(0, len(self.train_tokens) - ctx_len - 1, n_eval),
            "test": rng.integers(0, len(self.val_tokens) - ctx_len - 1, n_eval),
        }
        self.eval_batch_size = eval_batch_size
        self.device = torch.device("cpu")

    def to(self, device):
        self.device = torch.device(device)
        return self

    def _windows(self, arr, offsets):
        w = np.stack([np.asarray(arr[o: o + self.ctx_len + 1], dtype=np.int64) for o in offsets])
        w = torch.from_numpy(w).to(self.device)
        return w[:, :-1], w[:, 1:]

    def sample_batch(self, gen, batch_size):
        hi = len(self.train_tokens) - self.ctx_len - 1
        offsets = torch.randint(hi, (batch_size,), generator=gen).tolist()
        return self._windows(self.train_tokens, offsets)

    @staticmethod
    def _loss(logits, y):
        return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())

    def loss(self, model, batch):
        x, y = batch
        return self._loss(model(x), y)

    @torch.no_grad()
    def _split_metrics(self, model, arr, offsets, autocast):
        loss_sum, correct, n = 0.0, 0, 0
        for i in range(0, len(offsets), self.eval_batch_size):
            x, y = self._windows(arr, offsets[i: i + self.eval_batch_size])
            with autocast():
                logits = model(x)
            loss_sum += float(self._loss(logits, y)) * y.numel()
            correct += int((logits.argmax(-1) == y).sum())
            n += y.numel()
        return loss_sum / n, correct / n

    @torch.no_grad()
    def evaluate(self, model, step, autocast=None):
        autocast = autocast or nullcontext
        trl, tra = self._split_metrics(model, self.train_tokens, self._eval_offsets["train"], autocast)
        tel, tea = self._split_metrics(model, self.val_tokens, self._eval_offsets["test"], autocast)
        return eval_row(step, train_loss=trl, test_loss=tel, train_acc=tra, test_acc=tea,
                        grok_acc=tea, memo_acc=tra)
