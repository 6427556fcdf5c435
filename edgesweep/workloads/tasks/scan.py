"""SCAN (Lake & Baroni, 2018), generated from its published phrase-structure grammar.

Grammar (commands)::

    C → S and S | S after S | S
    S → V twice | V thrice | V
    V → D[1] opposite D[2] | D[1] around D[2] | D | U
    D → U left | U right | turn left | turn right
    U → walk | look | run | jump

(in ``D[1] opposite D[2]`` the two D's share their words: "walk opposite left", "turn around
right"). This yields 4 + 10 + 10 + 10 = 34 V-phrases, 102 S-phrases and 102 + 2·102² = 20,910
commands. Interpretation::

    ⟦walk⟧ = WALK   ⟦look⟧ = LOOK   ⟦run⟧ = RUN   ⟦jump⟧ = JUMP
    ⟦turn left⟧ = LTURN                 ⟦turn right⟧ = RTURN
    ⟦u left⟧ = LTURN ⟦u⟧                ⟦u right⟧ = RTURN ⟦u⟧
    ⟦turn opposite left⟧ = LTURN LTURN  ⟦u opposite left⟧ = ⟦turn opposite left⟧ ⟦u⟧
    ⟦turn around left⟧ = LTURN ×4       ⟦u around left⟧ = (LTURN ⟦u⟧) ×4      (same for right)
    ⟦x twice⟧ = ⟦x⟧ ⟦x⟧   ⟦x thrice⟧ = ⟦x⟧ ⟦x⟧ ⟦x⟧
    ⟦x1 and x2⟧ = ⟦x1⟧ ⟦x2⟧   ⟦x1 after x2⟧ = ⟦x2⟧ ⟦x1⟧

The *simple* split is a uniformly random 80/20 split of all commands (16,728 / 4,182). The
published split is one particular such permutation; edgesweep draws its own from ``data_seed``
(same distribution, no download). The paper trains on a 2,048-pair subsample of the training
split and evaluates on a 500-example subsample of the test split.

Sequence accuracy is computed under teacher forcing, as in the paper's script: an example counts
when the arg-max prediction is right at every scored target position (all actions and <eos>).
"""

from __future__ import annotations

from contextlib import nullcontext
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from .base import Task, chunks, eval_row

PRIMITIVES = ("walk", "look", "run", "jump")
ACTION_OF = {"walk": "WALK", "look": "LOOK", "run": "RUN", "jump": "JUMP"}
DIRECTIONS = ("left", "right")
TURN_OF = {"left": "LTURN", "right": "RTURN"}

# Fixed vocabularies (from the grammar, not from data, so ids never depend on the split).
SPECIALS = ("<pad>", "<sos>", "<eos>")
COMMAND_WORDS = SPECIALS + PRIMITIVES + ("turn", "left", "right", "opposite", "around",
                                         "twice", "thrice", "and", "after")
ACTION_WORDS = SPECIALS + ("WALK", "LOOK", "RUN", "JUMP", "LTURN", "RTURN")
PAD_ID, SOS_ID, EOS_ID = 0, 1, 2
IGNORE = -100


def _v_phrases() -> list[str]:
    out = list(PRIMITIVES)
    for verb in PRIMITIVES + ("turn",):
        for d in DIRECTIONS:
            out.append(f"{verb} {d}")
    for verb in PRIMITIVES + ("turn",):
        for mod in ("opposite", "around"):
            for d in DIRECTIONS:
                out.append(f"{verb} {mod} {d}")
    return out


def _s_phrases() -> list[str]:
    return [s for v in _v_phrases() for s in (v, f"{v} twice", f"{v} thrice")]


@lru_cache(maxsize=1)
def scan_commands() -> tuple[str, ...]:
    """Every distinct command the grammar generates (20,910), in a fixed order."""
    s = _s_phrases()
    return tuple(s) + tuple(f"{a} {conj} {b}" for conj in ("and", "after") for a in s for b in s)


def _interpret_v(words: list[str]) -> list[str]:
    verb = words[0]
    act = [] if verb == "turn" else [ACTION_OF[verb]]
    if len(words) == 1:
        if verb == "turn":
            raise ValueError("'turn' needs a direction")
        return act
    if len(words) == 2:
        return [TURN_OF[words[1]]] + act
    mod, turn = words[1], TURN_OF[words[2]]
    if mod == "opposite":
        return [turn, turn] + act
    if mod == "around":
        return ([turn] + act) * 4
    raise ValueError(f"bad V phrase {' '.join(words)!r}")


def _interpret_s(words: list[str]) -> list[str]:
    if words[-1] == "twice":
        return _interpret_v(words[:-1]) * 2
    if words[-1] == "thrice":
        return _interpret_v(words[:-1]) * 3
    return _interpret_v(words)


def interpret(command: str) -> str:
    """The action sequence of a SCAN command, e.g. "jump twice" → "JUMP JUMP"."""
    words = command.split()
    if "and" in words:
        i = words.index("and")
        out = _interpret_s(words[:i]) + _interpret_s(words[i + 1:])
    elif "after" in words:
        i = words.index("after")
        out = _interpret_s(words[i + 1:]) + _interpret_s(words[:i])
    else:
        out = _interpret_s(words)
    return " ".join(out)


def simple_split(data_seed: int = 0, train_frac: float = 0.8):
    """(train, test) lists of (command, actions) pairs: a random 80/20 split of all commands."""
    cmds = scan_commands()
    perm = np.random.default_rng(data_seed).permutation(len(cmds))
    n_train = int(round(train_frac * len(cmds)))
    pairs = [(cmds[i], interpret(cmds[i])) for i in perm]
    return pairs[:n_train], pairs[n_train:]


def encode_pairs(pairs, max_src_len: int = 9, max_tgt_len: int = 49):
    """(src, tgt_in, tgt_out) int64 tensors.

    src: command ids, PAD-padded; tgt_in: <sos> + actions, PAD-padded; tgt_out: actions + <eos>,
    IGNORE-padded (unscored).
    """
    cid = {w: i for i, w in enumerate(COMMAND_WORDS)}
    aid = {w: i for i, w in enumerate(ACTION_WORDS)}
    n = len(pairs)
    src = torch.full((n, max_src_len), PAD_ID, dtype=torch.long)
    tgt_in = torch.full((n, max_tgt_len), PAD_ID, dtype=torch.long)
    tgt_out = torch.full((n, max_tgt_len), IGNORE, dtype=torch.long)
    for i, (cmd, act) in enumerate(pairs):
        c = [cid[w] for w in cmd.split()]
        a = [aid[w] for w in act.split()]
        if len(c) > max_src_len or len(a) + 1 > max_tgt_len:
            raise ValueError(f"example longer than max lengths ({max_src_len}, {max_tgt_len}): {cmd!r}")
        src[i, : len(c)] = torch.tensor(c)
        tgt_in[i, : len(a) + 1] = torch.tensor([SOS_ID] + a)
        tgt_out[i, : len(a) + 1] = torch.tensor(a + [EOS_ID])
    return src, tgt_in, tgt_out


class ScanTask(Task):
    name = "scan"
    src_vocab_size = len(COMMAND_WORDS)
    tgt_vocab_size = len(ACTION_WORDS)

    def __init__(self, n_train: int = 2048, n_test: int = 500, data_seed: int = 0,
                 max_src_len: int = 9, max_tgt_len: int = 49, eval_batch: int = 512):
        train, test = simple_split(data_seed)
        if not (0 < n_train <= len(train) and 0 < n_test <= len(test)):
            raise ValueError(f"n_train must be in 1..{len(train)} and n_test in 1..{len(test)}")
        # Subsamples come from a stream separate from the split's, so that changing n_train
        # does not change which commands are in the test split.
        rng = np.random.default_rng([data_seed, 1])
        train = [train[i] for i in rng.choice(len(train), n_train, replace=False)]
        test = [test[i] for i in rng.choice(len(test), n_test, replace=False)]
        self.train_pairs, self.test_pairs = train, test
        self.train = encode_pairs(train, max_src_len, max_tgt_len)
        self.test = encode_pairs(test, max_src_len, max_tgt_len)
        self.eval_batch = eval_batch

    def to(self, device):
        self.train = tuple(t.to(device) for t in self.train)
        self.test = tuple(t.to(device) for t in self.test)
        return self

    def sample_batch(self, gen, batch_size):
        idx = torch.randint(len(self.train[0]), (batch_size,), generator=gen).to(self.train[0].device)
        return tuple(t[idx] for t in self.train)

    @staticmethod
    def _loss(logits, tgt_out):
        return F.cross_entropy(logits.flatten(0, 1).float(), tgt_out.flatten(), ignore_index=IGNORE)

    def loss(self, model, batch):
        src, tgt_in, tgt_out = batch
        return self._loss(model(src, tgt_in), tgt_out)

    @torch.no_grad()
    def _split_metrics(self, model, data, autocast):
        src, tgt_in, tgt_out = data
        loss_sum, correct, tokens, seq_correct = 0.0, 0, 0, 0
        for sl in chunks(len(src), self.eval_batch):
            with autocast():
                logits = model(src[sl], tgt_in[sl])
            y = tgt_out[sl]
            mask = y != IGNORE
            n = int(mask.sum())
            hit = (logits.argmax(-1) == y) | ~mask
            loss_sum += float(self._loss(logits, y)) * n
            correct += int((hit & mask).sum())
            tokens += n
            seq_correct += int(hit.all(dim=1).sum())
        return loss_sum / tokens, correct / tokens, seq_correct / len(src)

    @torch.no_grad()
    def evaluate(self, model, step, autocast=None):
        autocast = autocast or nullcontext
        trl, tra, trs = self._split_metrics(model, self.train, autocast)
        tel, tea, tes = self._split_metrics(model, self.test, autocast)
        return eval_row(step, train_loss=trl, test_loss=tel, train_acc=tra, test_acc=tea,
                        train_seq_acc=trs, test_seq_acc=tes, grok_acc=tes, memo_acc=trs)
