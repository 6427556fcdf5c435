"""What the workloads are, without torch: names, families, presets, option lists, and the
model/task configs a (workload, preset, overrides) resolves to.

Importing this module imports no torch (tests check it), so the sweep spec, ``edgesweep plan``
and the analysis can name and describe workloads cheaply; :mod:`.registry` builds the actual
models and tasks from what is resolved here.

Presets:

* ``paper`` — the paper's sizes and optimiser settings (DESIGN.md 1.4, thesis-notes §6). Where
  the paper's prose and its training scripts disagree on a size (Dyck "~150K", SCAN "~1.5M"),
  the scripts' configuration is used, since that is what produced the reported grokking.
* ``laptop`` — small enough for a 2-core CPU. For modular arithmetic this is the setting of
  DESIGN.md 1.4 (p 59, d 64, d_ff 128); measured here, addition groks with weight decay 1.0 at
  steps 3.8–5.2k for seeds 42/137/2024 and not without it by 6k (benchmarks/workloads.md).
  Dyck-1 is already laptop-sized, so its laptop preset is the paper model (groks at 200–400
  steps here). The SCAN and language-model laptop presets are only smaller models: whether they
  grok / learn in a useful number of steps has not been measured.
* ``tiny`` — the smallest model that runs each family in seconds, for tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from .configs import (DyckConfig, DyckTaskConfig, GPTConfig, ModArithConfig, ModularTaskConfig,
                      ScanTaskConfig, Seq2SeqConfig, TextTaskConfig)

OPTIMIZERS = ("adamw", "muon", "sgd")
DECAY_MODES = ("all", "matrices")
SCHEDULES = ("constant", "warmup_cosine")
DEVICES = ("auto", "cpu", "cuda")

PRESETS = ("laptop", "paper", "tiny")

MODULAR_OPS = {
    "mod_add": ("add",), "mod_sub": ("sub",), "mod_mul": ("mul",), "mod_sq": ("sq",),
    "mod_sq_cross": ("sq_cross",), "mod_cube": ("cube",),
    "multitask_2": ("add", "mul"), "multitask_3": ("add", "mul", "sq"),
}
WORKLOADS = tuple(MODULAR_OPS) + ("dyck", "scan", "tinystories", "gpt2")


@dataclass(frozen=True)
class Preset:
    task: dict                   # keyword arguments of the task class
    model: dict                  # fields of the family's model config
    lr: float                    # AdamW / Muon learning rate
    betas: tuple[float, float]
    batch_size: int
    eval_every: int              # the paper's evaluation interval (TrainConfig.eval_every is explicit)
    typical_steps: str           # what to expect, for the summary table
    sgd_lr: float = 1e-2         # not tuned by the paper; a starting point only
    paper_weight_decay: float = 1.0


@dataclass(frozen=True)
class WorkloadSpec:
    name: str
    family: str                  # modular | dyck | scan | lm
    description: str
    presets: dict = field(default_factory=dict)
    typical: dict = field(default_factory=dict)   # preset -> typical-steps text, overrides the preset's

    def typical_steps(self, preset: str) -> str:
        return self.typical.get(preset, self.preset(preset).typical_steps)

    def preset(self, name: str) -> Preset:
        if name not in self.presets:
            raise ValueError(f"preset must be one of {PRESETS}, got {name!r}")
        return self.presets[name]


# --- modular arithmetic ------------------------------------------------------------------------
_MOD_PRESETS = {
    "paper": Preset(task={"p": 97, "train_frac": 0.5},
                    model={"d_model": 128, "n_layers": 2, "n_heads": 4, "d_ff": 256},
                    lr=1e-3, betas=(0.9, 0.98), batch_size=512, eval_every=100,
                    typical_steps="grok ≈2.5–3.9k (paper)"),
    "laptop": Preset(task={"p": 59, "train_frac": 0.5},
                     model={"d_model": 64, "n_layers": 2, "n_heads": 4, "d_ff": 128},
                     lr=1e-3, betas=(0.9, 0.98), batch_size=512, eval_every=100,
                     typical_steps="not measured"),
    "tiny": Preset(task={"p": 11, "train_frac": 0.5},
                   model={"d_model": 16, "n_layers": 1, "n_heads": 2, "d_ff": 32},
                   lr=1e-3, betas=(0.9, 0.98), batch_size=64, eval_every=10,
                   typical_steps="smoke test"),
}

_DYCK_PAPER = Preset(task={"n_train": 50, "n_test": 5000, "ctx_len": 24, "max_pairs": 12},
                     model={"d_model": 128, "n_layers": 2, "n_heads": 4, "d_ff": 256},
                     lr=1e-3, betas=(0.9, 0.98), batch_size=50, eval_every=100,
                     typical_steps="grok ≈600–1,400 (paper); 200–400 measured, wd 0: none by 3k")
_DYCK_PRESETS = {
    "paper": _DYCK_PAPER,
    "laptop": _DYCK_PAPER,
    "tiny": Preset(task={"n_train": 10, "n_test": 50, "ctx_len": 8, "max_pairs": 4},
                   model={"d_model": 16, "n_layers": 1, "n_heads": 2, "d_ff": 32},
                   lr=1e-3, betas=(0.9, 0.98), batch_size=10, eval_every=10, typical_steps="smoke test"),
}

_SCAN_PRESETS = {
    "paper": Preset(task={"n_train": 2048, "n_test": 500},
                    model={"d_model": 256, "n_enc_layers": 3, "n_dec_layers": 3, "n_heads": 4, "d_ff": 512},
                    lr=1e-4, betas=(0.9, 0.98), batch_size=256, eval_every=500,
                    typical_steps="grok (seq acc) ≈2.5–4k (paper)"),
    "laptop": Preset(task={"n_train": 2048, "n_test": 500},
                     model={"d_model": 128, "n_enc_layers": 2, "n_dec_layers": 2, "n_heads": 4, "d_ff": 256},
                     lr=1e-4, betas=(0.9, 0.98), batch_size=128, eval_every=500,
                     typical_steps="not measured"),
    "tiny": Preset(task={"n_train": 64, "n_test": 32},
                   model={"d_model": 32, "n_enc_layers": 1, "n_dec_layers": 1, "n_heads": 2, "d_ff": 64},
                   lr=1e-3, betas=(0.9, 0.98), batch_size=16, eval_every=10, typical_steps="smoke test"),
}

_GPT2_VOCAB = 50257
_TS_PRESETS = {
    "paper": Preset(task={"ctx_len": 256, "eval_batches": 20, "eval_batch_size": 16},
                    model={"vocab_size": _GPT2_VOCAB, "ctx_len": 256, "d_model": 512, "n_layers": 8,
                           "n_heads": 16, "d_ff": 2048},
                    lr=1e-3, betas=(0.9, 0.95), batch_size=32, eval_every=200,
                    typical_steps="10k (paper)", sgd_lr=1e-1, paper_weight_decay=0.5),
    "laptop": Preset(task={"ctx_len": 128, "eval_batches": 8, "eval_batch_size": 16},
                     model={"vocab_size": 256, "ctx_len": 128, "d_model": 128, "n_layers": 4,
                            "n_heads": 4, "d_ff": 512},
                     lr=1e-3, betas=(0.9, 0.95), batch_size=32, eval_every=200,
                     typical_steps="not measured", sgd_lr=1e-1, paper_weight_decay=0.5),
    "tiny": Preset(task={"ctx_len": 32, "eval_batches": 2, "eval_batch_size": 4, "corpus_chars": 20_000},
                   model={"vocab_size": 256, "ctx_len": 32, "d_model": 32, "n_layers": 1,
                          "n_heads": 2, "d_ff": 64},
                   lr=1e-3, betas=(0.9, 0.95), batch_size=4, eval_every=10, typical_steps="smoke test",
                   sgd_lr=1e-1, paper_weight_decay=0.5),
}
_GPT2_PRESETS = {
    "paper": Preset(task={"ctx_len": 1024, "eval_batches": 20, "eval_batch_size": 8},
                    model={"vocab_size": _GPT2_VOCAB, "ctx_len": 1024, "d_model": 768, "n_layers": 12,
                           "n_heads": 12, "d_ff": 3072},
                    lr=6e-4, betas=(0.9, 0.95), batch_size=8, eval_every=200,
                    typical_steps="paper: fine-tune, steps 13.8k–25.6k", sgd_lr=1e-1,
                    paper_weight_decay=0.1),
    "laptop": Preset(task={"ctx_len": 128, "eval_batches": 8, "eval_batch_size": 16},
                     model={"vocab_size": 256, "ctx_len": 128, "d_model": 192, "n_layers": 6,
                            "n_heads": 6, "d_ff": 768},
                     lr=6e-4, betas=(0.9, 0.95), batch_size=32, eval_every=200,
                     typical_steps="not measured", sgd_lr=1e-1, paper_weight_decay=0.1),
    "tiny": _TS_PRESETS["tiny"],
}

_SPECS = {}
for _name, _ops in MODULAR_OPS.items():
    _desc = {"mod_add": "(a+b) mod p", "mod_sub": "(a−b) mod p", "mod_mul": "(a·b) mod p, nonzero pairs",
             "mod_sq": "(a²+b²) mod p", "mod_sq_cross": "(a²+ab+b²) mod p — never groks",
             "mod_cube": "(a³+ab) mod p — never groks",
             "multitask_2": "add+mul, shared trunk, 2 heads", "multitask_3": "add+mul+(a²+b²), 3 heads"}[_name]
    _typical = {
        "mod_add": {"paper": "stop (≥0.98) ≈2.8–3.3k (paper)", "laptop": "grok 3.8–5.2k (measured); wd 0: none by 6k"},
        # laptop: docs/results/grokking-laptop (seeds 42, 137, 2024; 6,000-step budget)
        "mod_sub": {"paper": "stop (≥0.98) ≈3.5–3.9k (paper)", "laptop": "no grok by 6k (measured, wd 1 and 0)"},
        "mod_mul": {"paper": "stop (≥0.98) ≈2.8–3.2k (paper)", "laptop": "grok 3.9–4.6k (measured); wd 0: none by 6k"},
        "mod_sq": {"paper": "stop (≥0.98) ≈2.5–3.3k (paper)", "laptop": "grok 3.8–4.7k (measured); wd 0: none by 6k"},
        "mod_sq_cross": {"paper": "never groks (200k, paper)", "laptop": "control: never groks"},
        "mod_cube": {"paper": "never groks (200k, paper)", "laptop": "control: never groks"},
        "multitask_2": {"paper": "not reported (budget 300k)"},
        "multitask_3": {"paper": "not reported (budget 300k)"},
    }[_name]
    _SPECS[_name] = WorkloadSpec(_name, "modular", _desc, _MOD_PRESETS, _typical)
_SPECS["dyck"] = WorkloadSpec("dyck", "dyck", "Dyck-1 depth, ctx 24, 50 train / 5,000 test", _DYCK_PRESETS)
_SPECS["scan"] = WorkloadSpec("scan", "scan", "SCAN simple split, 2,048 train / 500 test", _SCAN_PRESETS)
_SPECS["tinystories"] = WorkloadSpec("tinystories", "lm", "TinyStories-style GPT (51M)", _TS_PRESETS)
_SPECS["gpt2"] = WorkloadSpec("gpt2", "lm", "GPT-2 small (124M)", _GPT2_PRESETS)


def get_workload(name: str) -> WorkloadSpec:
    if name not in _SPECS:
        raise ValueError(f"workload must be one of {WORKLOADS}, got {name!r}")
    return _SPECS[name]


def family(workload: str) -> str:
    """The reporting family of a workload: modular, multitask, dyck, scan or lm; an unknown
    workload name is its own family (the analysis must not fail on data from a newer version)."""
    if workload in MODULAR_OPS and len(MODULAR_OPS[workload]) > 1:
        return "multitask"
    spec = _SPECS.get(workload)
    return spec.family if spec is not None else (workload or "unknown")


_TASK_CONFIG = {"modular": ModularTaskConfig, "dyck": DyckTaskConfig, "scan": ScanTaskConfig,
                "lm": TextTaskConfig}
_MODEL_CONFIG = {"modular": ModArithConfig, "dyck": DyckConfig, "scan": Seq2SeqConfig, "lm": GPTConfig}
# Model-config fields a preset derives from the task; overriding them would break the model/task fit.
_DERIVED_MODEL_KEYS = {"modular": {"p", "n_tasks"}, "dyck": {"vocab_size", "ctx_len", "n_classes"},
                       "scan": {"src_vocab_size", "tgt_vocab_size", "max_src_len", "max_tgt_len"},
                       "lm": {"ctx_len"}}
SCAN_VOCAB = {"src_vocab_size": 16, "tgt_vocab_size": 9}  # checked against ScanTask in tests


def task_keys(workload: str) -> set[str]:
    return {f.name for f in fields(_TASK_CONFIG[get_workload(workload).family])}


def model_keys(workload: str) -> set[str]:
    fam = get_workload(workload).family
    return {f.name for f in fields(_MODEL_CONFIG[fam])} - _DERIVED_MODEL_KEYS[fam]


def task_config(workload: str, preset: str, overrides: dict):
    """The task config of a workload/preset with overrides applied (validated by its class)."""
    spec = get_workload(workload)
    kw = dict(spec.preset(preset).task)
    kw.update(overrides)
    return _TASK_CONFIG[spec.family](**kw)


def model_config(workload: str, preset: str, task_overrides: dict, model_overrides: dict):
    """The model config of a workload/preset with overrides applied; needs no data, no torch."""
    spec = get_workload(workload)
    p = spec.preset(preset)
    task = task_config(workload, preset, task_overrides)
    mkw = dict(p.model)
    mkw.update(model_overrides)
    if spec.family == "modular":
        return ModArithConfig(p=task.p, n_tasks=len(MODULAR_OPS[workload]), **mkw)
    if spec.family == "dyck":
        return DyckConfig(ctx_len=task.ctx_len, n_classes=task.max_pairs + 1, **mkw)
    if spec.family == "scan":
        return Seq2SeqConfig(max_src_len=task.max_src_len, max_tgt_len=task.max_tgt_len,
                             **SCAN_VOCAB, **mkw)
    mkw["ctx_len"] = task.ctx_len
    return GPTConfig(**mkw)
