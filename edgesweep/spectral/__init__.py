"""Pure spectral math on tensors: the rolling Gram window, its features, sketches.

No I/O and no Ray here (DESIGN.md §2); see docs/CONTRACTS.md for the row keys.
"""

from .gram import RANK_RTOL, gram_eigh, spectrum_features
from .monitor import ATTENTION_PATTERN, FEATURE_COLUMNS, MonitorConfig, SpectralMonitor, select_parameters
from .sketch import CountSketch
from .window import window_features

__all__ = [
    "ATTENTION_PATTERN", "FEATURE_COLUMNS", "RANK_RTOL", "CountSketch", "MonitorConfig",
    "SpectralMonitor", "gram_eigh", "select_parameters", "spectrum_features", "window_features",
]
