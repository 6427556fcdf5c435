"""Read a W&B run's transaction log (``run-<id>.wandb``) back, for tests.

wandb ≥ 0.2x keeps no Python reader (its Go core reads the file), so this decodes the framing
— W&B's LevelDB-style log: a 7-byte header ``:W&B`` + magic 0xBEE1 + version, then 32 KiB
blocks of records, each with a 7-byte header (CRC-32, length, type FULL/FIRST/MIDDLE/LAST) —
and parses every payload with W&B's own protobuf schema, ``wandb.proto.wandb_internal_pb2.
Record``. CRC-32 is checked the way W&B writes it (over the type byte, then the payload).
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

BLOCK = 32 * 1024
HEADER = struct.Struct("<4sHB")      # ident, magic, version
RECORD = struct.Struct("<IHB")       # crc32, length, type
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: str | Path):
    """The protobuf Records of a .wandb file, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    ident, magic, _version = HEADER.unpack_from(data)
    if ident != b":W&B" or magic != 0xBEE1:
        raise ValueError(f"{path}: not a W&B transaction log (header {ident!r} {magic:#x})")
    pos, buf = HEADER.size, b""
    while pos + RECORD.size <= len(data):
        left = BLOCK - pos % BLOCK
        if left < RECORD.size:          # block tail too short for a header: zero padding
            pos += left
            continue
        crc, length, kind = RECORD.unpack_from(data, pos)
        if kind == 0 and length == 0:   # zero-filled rest of the last block
            break
        chunk = data[pos + RECORD.size: pos + RECORD.size + length]
        pos += RECORD.size + length
        if zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != crc:
            raise ValueError(f"{path}: CRC mismatch at byte {pos - length}")
        if kind in (FULL, FIRST):
            buf = chunk
        else:
            buf += chunk
        if kind in (FULL, LAST):
            rec = pb.Record()
            rec.ParseFromString(buf)
            yield rec


def read_run(path: str | Path) -> dict:
    """{"name", "id", "project", "group", "config": {key: value}, "history": [{key: value}]}."""
    out = {"config": {}, "history": []}
    for rec in records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out.update(name=rec.run.display_name, id=rec.run.run_id, project=rec.run.project,
                       group=rec.run.run_group)
            out["config"].update({u.key: json.loads(u.value_json) for u in rec.run.config.update})
        elif kind == "config":
            out["config"].update({u.key: json.loads(u.value_json) for u in rec.config.update})
        elif kind == "history":
            out["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                   for i in rec.history.item})
    return out
