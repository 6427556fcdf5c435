"""argparse types the command lines share: a path or URI, and text a library needs as UTF-8.

Storage holds them because its own entry points (``python -m edgesweep.storage query|verify``)
take the same arguments as ``edgesweep query|verify``, and storage depends on nothing above it.
"""

from __future__ import annotations

import argparse


def path_argument(text: str) -> str:
    """A path or URI: an empty or blank one is refused rather than read as the current folder
    (``edgesweep aggregate "$SWEEP"`` with the variable unset would otherwise aggregate, or
    write into, wherever the shell stands)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not a path: it is empty or blank (an unset shell variable?)")
    return text


def utf8_argument(what: str):
    """Text handed to a library that needs UTF-8 (the SQL): bytes of the command line that are
    not UTF-8 reach Python as surrogates; refused here naming ``what`` and the first such byte."""
    def parse(text: str) -> str:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            bad = text[exc.start]
            # A command line's undecodable byte b arrives as U+DC00 + b (surrogateescape); any
            # other lone surrogate can only come from a caller in Python: name its code point.
            code = f"byte 0x{ord(bad) - 0xDC00:02x}" if 0xDC80 <= ord(bad) <= 0xDCFF else f"U+{ord(bad):04X}"
            raise argparse.ArgumentTypeError(f"the {what} is not UTF-8 text ({code} at character "
                                             f"{exc.start + 1})") from None
        return text
    parse.__name__ = what  # argparse names a type by it in its fallback message
    return parse
