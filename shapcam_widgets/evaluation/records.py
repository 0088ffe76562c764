"""The records of an evaluation beside ``--out``: their files, reading, writing, merging.

For ``--out results.json``:

- ``results.records.jsonl``: one JSON object per line. The first line is
  ``{"config": {...}}`` (what the records depend on); then one record per (image,
  method), or ``{"image_id": ..., "skipped": reason}`` for an image that could not be
  read. Records are appended and flushed one at a time, so an interrupted run resumes
  where it stopped; a run whose configuration differs from the file's is refused.
- ``results.records.rank<r>.jsonl``: the same, written by process r of a multi-process
  run (torchrun); merged into ``results.records.jsonl`` (in CSV order) and removed at the
  end of the run, or by the next run of any size.
"""

import json
import os
from pathlib import Path

from ..errors import ShapCAMError


def records_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}.records.jsonl")


def shard_path(out: Path, rank: int) -> Path:
    return out.with_name(f"{out.stem}.records.rank{rank}.jsonl")


def shard_paths(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f"{out.stem}.records.rank*.jsonl"))


def read_records(out: Path, config) -> tuple[dict, dict]:
    """({(image_id, method): record}, {image_id: skip record}) from all record files."""
    done, skipped = {}, {}
    for path in [records_path(out), *shard_paths(out)]:
        if not path.exists():
            continue
        with open(path) as handle:
            for number, line in enumerate(handle):
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    # a line cut short by an interruption: the next run redoes it
                    continue
                if "config" in record:
                    if record["config"] != config.key():
                        raise ShapCAMError(
                            f"{path} holds records made with {record['config']}, not "
                            f"{config.key()}: pass --fresh to start over, or another --out"
                        )
                elif "skipped" in record:
                    skipped[record["image_id"]] = record
                elif number == 0:
                    raise ShapCAMError(f"{path} does not start with a config line")
                else:
                    done[(record["image_id"], record["method"])] = record
    return done, skipped


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1)


class RecordWriter:
    """Appends records to one file, one flushed line each; starts a new file with its header."""

    def __init__(self, path: Path, config):
        fresh = not path.exists() or path.stat().st_size == 0
        cut = not fresh and _last_byte(path) != b"\n"
        self.handle = open(path, "a")
        if fresh:
            self.write({"config": config.key()})
        elif cut:  # an interrupted write: end that line, so that it stays the only bad one
            self.handle.write("\n")

    def write(self, record: dict) -> None:
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def merge_records(out: Path, dataset, config) -> tuple[dict, dict]:
    """Fold the shard files into the main records file (CSV order first); remove them."""
    done, skipped = read_records(out, config)
    order = {sample.image_id: i for i, sample in enumerate(dataset.samples)}
    methods_order = {}
    for _image_id, method in done:
        methods_order.setdefault(method, len(methods_order))
    lines = [{"config": config.key()}]
    lines += sorted(skipped.values(), key=lambda r: order.get(r["image_id"], len(order)))
    lines += [
        done[key]
        for key in sorted(
            done, key=lambda k: (order.get(k[0], len(order)), k[0], methods_order[k[1]])
        )
    ]
    path = records_path(out)
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w") as handle:
        for line in lines:
            handle.write(json.dumps(line) + "\n")
    os.replace(temporary, path)
    for shard in shard_paths(out):
        shard.unlink()
    return done, skipped
