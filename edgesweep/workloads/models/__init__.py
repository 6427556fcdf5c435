"""Model families, one module each (nanoGPT style: a config dataclass and an nn.Module)."""

from .dyck import DyckConfig, DyckTransformer
from .gpt import GPT, GPTConfig
from .layers import Attention, Block, DecoderBlock, MLP, count_parameters
from .modular import ModArithConfig, ModArithTransformer
from .seq2seq import Seq2SeqConfig, Seq2SeqTransformer

__all__ = [
    "Attention", "Block", "DecoderBlock", "MLP", "count_parameters",
    "ModArithConfig", "ModArithTransformer",
    "DyckConfig", "DyckTransformer",
    "Seq2SeqConfig", "Seq2SeqTransformer",
    "GPTConfig", "GPT",
]
