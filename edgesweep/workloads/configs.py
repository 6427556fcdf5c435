"""The config dataclasses of every model family and task — plain data, no torch.

They live apart from the ``nn.Module`` and task classes so that a sweep spec can be validated
(and ``edgesweep plan`` can run) without importing torch: a value the model or the data
generator could not use (``d_model: big``, ``p: -7``, ``d_model`` not divisible by ``n_heads``)
fails in ``__post_init__`` here, with the field name and what is allowed, before any cluster
or trial starts. The model and task classes take these configs and trust them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields


def _fail(cls, name: str, value, allowed: str) -> ValueError:
    return ValueError(f"{cls.__name__}.{name}: got {value!r}; allowed: {allowed}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_fields(obj, ints: dict[str, tuple[int, int | None]] = (), fracs: tuple[str, ...] = (),
                 bools: tuple[str, ...] = ()) -> None:
    """Integer fields within [lo, hi] (hi None: unbounded), fractions in the open (0, 1), bools."""
    cls = type(obj)
    for name, (lo, hi) in dict(ints).items():
        v = getattr(obj, name)
        if not _is_int(v) or v < lo or (hi is not None and v > hi):
            raise _fail(cls, name, v, f"an integer in [{lo}, {hi if hi is not None else '∞'}]")
    for name in fracs:
        v = getattr(obj, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0.0 < v < 1.0):
            raise _fail(cls, name, v, "a number in (0, 1)")
    for name in bools:
        if not isinstance(getattr(obj, name), bool):
            raise _fail(cls, name, getattr(obj, name), "true or false")


def _check_heads(obj, d_model: int, n_heads: int) -> None:
    if d_model % n_heads:
        raise ValueError(f"{type(obj).__name__}.d_model: {d_model} is not divisible by "
                         f"n_heads {n_heads}; allowed: a multiple of n_heads")


_BIG = 1 << 20  # widths/sizes beyond this are typos, not models (2^20 = a 1M-wide layer)
#: The largest modulus: a modular task materialises all p² input pairs (p = 8192: 67M pairs,
#: about 2 GB with their labels and the shuffle), and its model has a p-way output.
MAX_MODULUS = 8192


# --- models ----------------------------------------------------------------------------------

@dataclass
class ModArithConfig:
    p: int = 97            # vocabulary = residues 0..p-1; also the number of classes per head
    n_tasks: int = 1       # one linear head per task
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 256

    def __post_init__(self):
        check_fields(self, {"p": (2, MAX_MODULUS), "n_tasks": (1, 16), "d_model": (1, _BIG),
                            "n_layers": (1, 256), "n_heads": (1, 1024), "d_ff": (1, _BIG)})
        _check_heads(self, self.d_model, self.n_heads)


@dataclass
class DyckConfig:
    vocab_size: int = 3
    ctx_len: int = 24
    n_classes: int = 13
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 256

    def __post_init__(self):
        check_fields(self, {"vocab_size": (3, 3), "ctx_len": (2, 1 << 16), "n_classes": (2, 1 << 15),
                            "d_model": (1, _BIG), "n_layers": (1, 256), "n_heads": (1, 1024),
                            "d_ff": (1, _BIG)})
        _check_heads(self, self.d_model, self.n_heads)


@dataclass
class Seq2SeqConfig:
    src_vocab_size: int = 16   # 13 SCAN command words + pad/sos/eos
    tgt_vocab_size: int = 9    # 6 SCAN actions + pad/sos/eos
    max_src_len: int = 9       # longest SCAN command ("jump around left thrice and ...") is 9 words
    max_tgt_len: int = 49      # longest action sequence is 48, plus <sos> / <eos>
    d_model: int = 256
    n_enc_layers: int = 3
    n_dec_layers: int = 3
    n_heads: int = 4
    d_ff: int = 512

    def __post_init__(self):
        check_fields(self, {"src_vocab_size": (1, _BIG), "tgt_vocab_size": (1, _BIG),
                            "max_src_len": (9, 4096), "max_tgt_len": (49, 4096), "d_model": (1, _BIG),
                            "n_enc_layers": (1, 256), "n_dec_layers": (1, 256), "n_heads": (1, 1024),
                            "d_ff": (1, _BIG)})
        _check_heads(self, self.d_model, self.n_heads)


@dataclass
class GPTConfig:
    vocab_size: int = 50257
    ctx_len: int = 1024
    d_model: int = 768
    n_layers: int = 12
    n_heads: int = 12
    d_ff: int = 3072
    bias: bool = True
    tie_weights: bool = True

    def __post_init__(self):
        check_fields(self, {"vocab_size": (2, 1 << 24), "ctx_len": (2, 1 << 20), "d_model": (1, _BIG),
                            "n_layers": (1, 256), "n_heads": (1, 1024), "d_ff": (1, _BIG)},
                     bools=("bias", "tie_weights"))
        _check_heads(self, self.d_model, self.n_heads)


# --- tasks -----------------------------------------------------------------------------------

@dataclass
class ModularTaskConfig:
    p: int = 97
    train_frac: float = 0.5
    eval_batch: int = 8192

    def __post_init__(self):
        check_fields(self, {"p": (2, MAX_MODULUS), "eval_batch": (1, 1 << 24)}, fracs=("train_frac",))
        # At least one training and one test pair, with the fewest pairs an op can have
        # (p·(p−1): division and multiplication leave b = 0 out). Fewer would fail only inside
        # the trial (a division by an empty split).
        pairs = self.p * (self.p - 1)
        if int(self.train_frac * pairs) < 1:
            raise ValueError(f"ModularTaskConfig.train_frac: got {self.train_frac!r}, which leaves no training pair "
                             f"of the {pairs:,} (p = {self.p}); allowed: ≥ {1 / pairs:.3g}")


@dataclass
class DyckTaskConfig:
    n_train: int = 50
    n_test: int = 5000
    ctx_len: int = 24
    max_pairs: int = 12
    eval_batch: int = 1024

    def __post_init__(self):
        check_fields(self, {"n_train": (1, 1 << 24), "n_test": (1, 1 << 24), "ctx_len": (2, 1 << 16),
                            "max_pairs": (1, 1 << 15), "eval_batch": (1, 1 << 24)})
        if self.ctx_len < 2 * self.max_pairs:
            raise ValueError(f"DyckTaskConfig.max_pairs: {self.max_pairs} needs ctx_len ≥ "
                             f"{2 * self.max_pairs}, got {self.ctx_len}; allowed: max_pairs ≤ ctx_len / 2")


# SCAN simple split sizes (tested in tests/test_workloads.py): 20,910 commands, 80/20.
SCAN_TRAIN_SIZE, SCAN_TEST_SIZE = 16_728, 4_182


@dataclass
class ScanTaskConfig:
    n_train: int = 2048
    n_test: int = 500
    max_src_len: int = 9
    max_tgt_len: int = 49
    eval_batch: int = 512

    def __post_init__(self):
        check_fields(self, {"n_train": (1, SCAN_TRAIN_SIZE), "n_test": (1, SCAN_TEST_SIZE),
                            "max_src_len": (9, 4096), "max_tgt_len": (49, 4096), "eval_batch": (1, 1 << 24)})


@dataclass
class TextTaskConfig:
    corpus: str | None = None
    ctx_len: int = 256
    val_fraction: float = 0.1
    corpus_chars: int = 2_000_000
    eval_batches: int = 8
    eval_batch_size: int = 16

    def __post_init__(self):
        if self.corpus is not None and not isinstance(self.corpus, str):
            raise _fail(type(self), "corpus", self.corpus, "null or a file path")
        check_fields(self, {"ctx_len": (2, 1 << 20), "corpus_chars": (1024, 1 << 40),
                            "eval_batches": (1, 1 << 20), "eval_batch_size": (1, 1 << 20)},
                     fracs=("val_fraction",))


def field_names(cls) -> set[str]:
    return {f.name for f in fields(cls)}


def finite_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
