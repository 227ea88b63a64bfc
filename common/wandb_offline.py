"""What an offline W&B run recorded, read from its `run-<id>.wandb` file without a W&B account.

The file is a LevelDB-style log (W&B's own format: a 7-byte header, then 32 KiB blocks of
records, each `crc32 (4) | length (2) | type (1)` and a chunk of a protobuf `Record`). Read here
to test what a run carries (tags, config, summary and history keys) and to check that the report's
panels name metrics the runs have.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HEADER, BLOCK, CHUNK = 7, 32768, 7
FULL, LAST = 1, 4  # chunk types that end a record (FIRST=2, MIDDLE=3 continue it)


def _records(raw: bytes) -> Iterator[bytes]:
    pos, record = HEADER, b""
    while pos + CHUNK <= len(raw):
        left = BLOCK - pos % BLOCK
        if left < CHUNK:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos : pos + CHUNK])
        if length == 0 and kind == 0:  # zero padding to the block's end
            pos += left
            continue
        record += raw[pos + CHUNK : pos + CHUNK + length]
        pos += CHUNK + length
        if kind in (FULL, LAST):
            yield record
            record = b""


@dataclass
class OfflineRun:
    """The parts of an offline run the project relies on."""

    name: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    summary_keys: set[str] = field(default_factory=set)
    history_keys: set[str] = field(default_factory=set)


def _key(item: Any) -> str:
    """A summary or history item's name (newer W&B writes it as a one-part `nested_key`)."""
    return item.key or "/".join(item.nested_key)


def read_offline_run(run_dir: Path) -> OfflineRun:
    """The run recorded in `run_dir` (a `wandb/offline-run-*` folder)."""
    from wandb.proto import wandb_internal_pb2 as pb

    [path] = Path(run_dir).glob("run-*.wandb")
    run = OfflineRun()
    for data in _records(path.read_bytes()):
        record = pb.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.name, run.group, run.job_type, run.tags = (
                r.display_name, r.run_group, r.job_type, list(r.tags)
            )  # fmt: skip
            run.config |= {i.key: json.loads(i.value_json) for i in r.config.update}
        elif kind == "config":
            run.config |= {i.key: json.loads(i.value_json) for i in record.config.update}
        elif kind == "summary":
            run.summary_keys |= {_key(i) for i in record.summary.update}
        elif kind == "history":
            run.history_keys |= {_key(i) for i in record.history.item}
    return run
