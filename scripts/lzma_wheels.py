"""Recompress wheels with LZMA so that more of them fit in what one device call carries (64 MiB).

    python scripts/lzma_wheels.py .whl/*.whl          # in place; wheels under 1 MiB are left

A wheel is a zip; pip installs it with Python's ``zipfile``, which reads LZMA members as well
as deflated ones, and the wheel's RECORD lists hashes of the *uncompressed* files, so it stays
valid. Polars' runtime wheel
(a 178 MB shared library) goes from 53.9 MB deflated to about 33 MB (measured 2026-12-03), which
turns a call's headroom from ~0.3 MB into ~21 MB. Member names, order, timestamps and permission
bits are kept. Idempotent: a wheel whose members are all LZMA already is skipped.
"""

from __future__ import annotations

import argparse
import os
import sys
import zipfile

MIN_BYTES = 1 << 20


def is_lzma(path: str) -> bool:
    with zipfile.ZipFile(path) as z:
        return all(i.compress_type == zipfile.ZIP_LZMA for i in z.infolist() if i.file_size)


def recompress(path: str) -> tuple[int, int]:
    """Rewrite the wheel at ``path`` with every member LZMA-compressed (atomically: a temp file
    renamed over it). Returns (bytes before, bytes after)."""
    before = os.path.getsize(path)
    tmp = f"{path}.lzma-tmp"
    try:
        with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w") as dst:
            for info in src.infolist():
                out = zipfile.ZipInfo(info.filename, date_time=info.date_time)
                out.external_attr = info.external_attr  # the unix mode (executable bits)
                out.create_system = info.create_system
                out.compress_type = zipfile.ZIP_LZMA if info.file_size else zipfile.ZIP_STORED
                # zip64 announced up front for a member past 2 GiB (zipfile cannot switch later)
                with src.open(info) as r, dst.open(out, "w", force_zip64=info.file_size > zipfile.ZIP64_LIMIT) as w:
                    while chunk := r.read(1 << 20):
                        w.write(chunk)
        with zipfile.ZipFile(tmp) as check:  # every member's CRC, before it replaces the original
            bad = check.testzip()
        if bad is not None:
            raise OSError(f"{tmp}: member {bad} fails its CRC after recompression")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return before, os.path.getsize(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("wheels", nargs="+")
    ap.add_argument("--min-bytes", type=int, default=MIN_BYTES,
                    help=f"leave wheels smaller than this (default {MIN_BYTES})")
    args = ap.parse_args(argv)
    for path in args.wheels:
        name = os.path.basename(path)
        if os.path.getsize(path) < args.min_bytes:
            continue
        if is_lzma(path):
            print(f"  {name}: LZMA already")
            continue
        before, after = recompress(path)
        print(f"  {name}: {before:,} → {after:,} bytes (LZMA)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
