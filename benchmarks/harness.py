"""The measuring harness of ``python -m benchmarks``: time, memory, error, the report.

``measure`` times run(seed) over seeds (median, after an untimed warm-up) and records the
extra peak memory (``PeakMemory``); ``mse`` is the accuracy figure; ``Report`` collects one
entry (a dict, written as is to results.json) per measurement. Entries are found by their
``Key`` (what was measured: method, layer, m, path, variant), never by their display name,
which is only for people (results.md, notebooks/07_performance.ipynb).
"""

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch


def _proc_status_kib(key: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def return_freed_memory() -> None:
    """Make glibc give big freed blocks back to the OS, so that RSS peaks are per run.

    Fixed mmap threshold (M_MMAP_THRESHOLD = -3) of 64 KiB: large tensors live in their
    own mappings and leave the resident set when freed. A no-op off glibc.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, 64 * 1024)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Extra peak memory of a block: GPU allocations on CUDA, resident set on the CPU.

    On Linux the resident high-water mark is reset by writing 5 to /proc/self/clear_refs;
    where that is refused the figure is the growth of the process's lifetime peak.
    """

    def __init__(self, device: torch.device):
        self.device, self.peak = device, 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            try:
                with open("/proc/self/clear_refs", "w") as clear:
                    clear.write("5")
            except OSError:
                pass
            self.start = _proc_status_kib("VmRSS") * 1024
        return self

    def __exit__(self, *_):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.start
        else:
            self.peak = max(0, _proc_status_kib("VmHWM") * 1024 - self.start)


@dataclass
class Timing:
    seconds: float
    all_seconds: list[float]
    outputs: list
    peak_bytes: int


def measure(
    run: Callable[[int], object], repeats: int, device: torch.device, *, warmup: bool = True
) -> Timing:
    """Median seconds of run(seed) over seeds 0 .. repeats-1.

    warmup: call run once first, untimed (one-off costs: oneDNN kernels, lazy imports).
    """
    if warmup:
        run(repeats)
    times, outputs, peak = [], [], 0
    for seed in range(repeats):
        with PeakMemory(device) as memory:
            started = time.perf_counter()
            outputs.append(run(seed))
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
        peak = max(peak, memory.peak)
    return Timing(statistics.median(times), times, outputs, peak)


def mse(estimates, reference: np.ndarray) -> float:
    """Mean over estimates of the mean squared error per player."""
    return float(np.mean([np.mean((np.ravel(e) - reference) ** 2) for e in estimates]))


@dataclass(frozen=True)
class Key:
    """What an entry measured, to find it by.

    method: "shapcam", "captum", "GradCAM", "ScoreCAM", "sampling", "tail", "exact", ...;
    layer: the layer's name ("toy" for toy games); m: orderings (players for exact games);
    path: Shap-CAM's path; variant: what sets the entry apart from its method's others
    (captum's default perturbations_per_eval, plain or antithetic sampling, equal time).
    """

    method: str
    layer: str
    m: int | None = None
    path: str | None = None
    variant: str | None = None


@dataclass
class Report:
    device: torch.device
    entries: list[dict] = field(default_factory=list)
    by_key: dict[Key, dict] = field(default_factory=dict)

    def add(self, key: Key, name, players, samples, timing, *, peer=None, mse_value=None, **extra):
        """Add the entry ``name`` (its display name) measured as ``key``; peer: the Key of
        the entry it is compared with (speed, or MSE with compare="mse")."""
        if key in self.by_key:
            raise ValueError(f"two entries measured as {key}")
        other = None if peer is None else self.by_key[peer]
        entry = {
            "name": name,
            "layer": key.layer,
            "players": players,
            "samples": samples,
            "seconds": timing.seconds if timing else extra.pop("seconds"),
            "peer": None if other is None else other["name"],
            "ratio_vs_peer": None,
            "mse": mse_value,
            "device": device_name(self.device),
            "peak_mib": round(timing.peak_bytes / 2**20, 1) if timing else None,
            "all_seconds": [round(t, 4) for t in timing.all_seconds] if timing else None,
        }
        entry.update(extra)
        if other is not None:
            value = "mse" if entry.get("compare") == "mse" else "seconds"
            if other[value] and entry[value]:
                entry["ratio_vs_peer"] = other[value] / entry[value]
        self.entries.append(entry)
        self.by_key[key] = entry
        print(_line(entry), flush=True)
        return entry

    def find(self, key: Key) -> dict | None:
        """The entry measured as ``key``, or None."""
        return self.by_key.get(key)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def _line(entry: dict) -> str:
    ratio = entry["ratio_vs_peer"]
    text = f"{entry['name']:<44} {entry['layer']:<9} {entry['seconds']:9.4f} s"
    if ratio is not None:
        text += f"  x{ratio:.2f} vs {entry['peer']}"
    if entry["mse"] is not None:
        text += f"  mse {entry['mse']:.3g}"
    return text
