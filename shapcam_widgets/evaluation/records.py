"""The files of an evaluation beside ``--out``: records, their lock, and the output check.

For ``--out results.json``:

- ``results.records.jsonl``: one JSON object per line. The first line is
  ``{"config": {...}, "data": {...}}``: the settings the records depend on and the
  fingerprint of the data they were made from (``ImageNetLOC.fingerprint``). Then one
  record per (image, method), or ``{"image_id": ..., "skipped": reason}`` for an image that
  could not be read (retried by the next run, and dropped once it is read). Records are
  appended and flushed one at a time, so an interrupted run resumes where it stopped; a
  run whose settings or data differ from the file's is refused.
- ``results.records.rank<r>.jsonl``: the same, written by process r of a multi-process
  run (torchrun); merged into ``results.records.jsonl`` (in CSV order) and removed at the
  end of the run, or by the next run of any size.
- ``results.json.lock``: there while a run writes these files, locked by it (its pid,
  host and start inside); another run on the same ``--out`` is refused meanwhile.
"""

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from ..errors import ShapCAMError
from .data import MAPPING, SOLUTION

#: What each part of a data fingerprint covers, for the refusal of other data.
FINGERPRINT_PARTS = {
    "csv": SOLUTION,
    "mapping": MAPPING,
    "images": "the image files its rows name",
}


def records_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}.records.jsonl")


def shard_path(out: Path, rank: int) -> Path:
    return out.with_name(f"{out.stem}.records.rank{rank}.jsonl")


def shard_paths(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f"{out.stem}.records.rank*.jsonl"))


def check_output(out: str | os.PathLike) -> Path:
    """``out`` as a Path; ShapCAMError, before any work, when the summary or the files
    beside it could not be written there."""
    out = Path(out)
    for path in (out, out.with_suffix(".csv"), records_path(out)):
        if path.is_dir():
            raise ShapCAMError(f"--out {str(out)!r}: {str(path)!r} is a folder, not a file")
    if out.suffix.lower() != ".json":
        raise ShapCAMError(
            f"--out {str(out)!r} must name the summary's .json file, e.g. results/results.json"
        )
    folder = out.absolute().parent
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    if not existing.is_dir():
        raise ShapCAMError(f"--out {str(out)!r}: {str(existing)!r} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ShapCAMError(f"--out {str(out)!r}: the folder {str(existing)!r} is not writable")
    return out


class OutputLock:
    """An exclusive lock (flock) on ``<out>.lock`` for the run that writes ``out``'s files.

    The kernel releases it when the process ends, however it ends; the file names the
    holder, so that a refused run can say who it is.
    """

    def __init__(self, out: Path):
        self.out = out
        self.path = out.with_name(out.name + ".lock")
        self.handle = None

    def acquire(self) -> None:
        """Take the lock, or raise ShapCAMError naming the process that holds it."""
        while self.handle is None:
            handle = open(self.path, "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "a process that is starting"
                handle.close()
                raise ShapCAMError(
                    f"{str(self.out)!r} is being written by another evaluation ({holder}): "
                    "wait for it to end, or pass another --out"
                ) from None
            if _same_file(handle, self.path):
                self.handle = handle
            else:  # the holder removed the file as it ended: lock the new one
                handle.close()
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        self.handle.truncate(0)
        self.handle.write(f"pid {os.getpid()} on {socket.gethostname()}, started {started}\n")
        self.handle.flush()

    def release(self) -> None:
        """Remove the lock file and unlock (nothing when not held)."""
        if self.handle is not None:
            self.path.unlink(missing_ok=True)
            self.handle.close()
            self.handle = None


def _same_file(handle, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
    except FileNotFoundError:
        return False


def read_records(out: Path, config, fingerprint: dict) -> tuple[dict, dict, list[Path]]:
    """({(image_id, method): record}, {image_id: skip record}, files without a data
    fingerprint) from all record files of ``out``.

    Refuses (ShapCAMError) files made with other settings (``config.key()``) or from
    other data; files from before fingerprints were recorded are taken as made from this
    data, and returned, so that the caller can say so.
    """
    done, skipped, unknown = {}, {}, []
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
                    _check_header(path, record, config.key(), fingerprint)
                    if "data" not in record:
                        unknown.append(path)
                elif "skipped" in record:
                    skipped[record["image_id"]] = record
                elif number == 0:
                    raise ShapCAMError(f"{path} does not start with a config line")
                else:
                    done[(record["image_id"], record["method"])] = record
    return done, skipped, unknown


def _check_header(path: Path, header: dict, key: dict, fingerprint: dict) -> None:
    if header["config"] != key:
        raise ShapCAMError(
            f"{path} holds records made with {header['config']}, not "
            f"{key}: pass --fresh to start over, or another --out"
        )
    if "data" in header and header["data"] != fingerprint:
        differ = [
            what
            for part, what in FINGERPRINT_PARTS.items()
            if header["data"].get(part) != fingerprint[part]
        ]
        raise ShapCAMError(
            f"{path} holds records made from other data than --data: "
            f"{', '.join(differ)} differ: pass --fresh to start over, or another --out"
        )


def _header(config, fingerprint: dict) -> dict:
    return {"config": config.key(), "data": fingerprint}


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1)


class RecordWriter:
    """Appends records to one file, one flushed line each; starts a new file with its header."""

    def __init__(self, path: Path, config, fingerprint: dict):
        fresh = not path.exists() or path.stat().st_size == 0
        cut = not fresh and _last_byte(path) != b"\n"
        self.handle = open(path, "a")
        if fresh:
            self.write(_header(config, fingerprint))
        elif cut:  # an interrupted write: end that line, so that it stays the only bad one
            self.handle.write("\n")

    def write(self, record: dict) -> None:
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def merge_records(out: Path, dataset, config, fingerprint: dict) -> tuple[dict, dict]:
    """Fold the shard files into the main records file (CSV order first), with this data's
    fingerprint; drop the skip records of images now evaluated; remove the shards.

    Returns (done, skipped) as ``read_records``. Only the holder of ``out``'s lock may.
    """
    done, skipped, _unknown = read_records(out, config, fingerprint)
    skipped = {
        image_id: record
        for image_id, record in skipped.items()
        if not all((image_id, name) in done for name in config.methods)
    }
    order = {sample.image_id: i for i, sample in enumerate(dataset.samples)}
    methods_order = {}
    for _image_id, method in done:
        methods_order.setdefault(method, len(methods_order))
    lines = [_header(config, fingerprint)]
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
