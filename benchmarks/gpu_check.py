"""Shap-CAM on a CUDA GPU: seconds, evaluations per second, and the raw tail forward.

Run by ``scripts/gpu_check.sh`` on a machine with a CUDA GPU; writes ``benchmarks/gpu.json``
(or ``--out``). EfficientNet-Lite0 (ImageNet weights), value "prob", baseline "zero",
the label class of the first ``--images`` images of the ImageNet subset:

- the general path at ``blocks.5`` (7 x 7 = 49 players) and ``blocks.4`` (14 x 14 in
  2 x 2 blocks = 49 players, and in single cells = 196 players) at m = 256 orderings;
- the fast path at ``blocks.6`` at m = 4,096 orderings;
- the local path at ``blocks.5`` at m = 256 (same estimates as the general path);
- for each, a raw batched forward of the same tail (masked activations in, logits out)
  at the batch size the explainer used, over as many evaluations: the ceiling that
  ``ratio_to_raw_forward`` (the explainer's evaluations per second over the raw
  forward's) is measured against. The fast and local paths do not run the whole tail
  per coalition: their ratio is against the raw tail at a batch of 1,024 (above 1:
  faster than any general path can be).

Seconds are wall time with ``torch.cuda.synchronize()``, medians over the images after
one warm-up image; ``cpu_seconds_per_image`` is the process's CPU time over the same call
(all threads): near or above the wall time, a path waits on the host, not the GPU (the
fast path's float64 sums run on the CPU), so ``host`` names the CPU. Peak memory is
``torch.cuda.max_memory_allocated`` above what was allocated before the call.
"""

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from shapcam_widgets.cam import ShapCAM
from shapcam_widgets.cam.layers import SplitNetwork
from shapcam_widgets.evaluation.data import ImageNetLOC
from shapcam_widgets.models import load_model

HERE = Path(__file__).resolve().parent
FAST_PATH_RAW_BATCH = 1024
#: (name, layer, block_size, path, orderings)
SCENARIOS = (
    ("general blocks.5", "blocks.5", 1, "general", 256),
    ("general blocks.4 2x2", "blocks.4", 2, "general", 256),
    ("general blocks.4 cells", "blocks.4", 1, "general", 256),
    ("fast blocks.6", "blocks.6", 1, "fast", 4096),
    # last, so that the others are written should it fail on a new device
    ("local blocks.5", "blocks.5", 1, "local", 256),
)


def _synchronized() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def _peak_memory_tracker(device: torch.device):
    """A function returning the peak bytes allocated on ``device`` since it was made
    (None on the CPU, where the check only smoke-tests the script)."""
    if device.type != "cuda":
        return lambda: None
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    return lambda: torch.cuda.max_memory_allocated() - before


def _batch_sizes(model):
    """A forward hook on the classifier recording each call's batch size."""
    sizes: list[int] = []
    hook = model.get_classifier().register_forward_hook(
        lambda _m, inputs, _out: sizes.append(len(inputs[0]))
    )
    return sizes, hook


def measure_explainer(model, images, layer, block_size, path, orderings, device) -> dict:
    """Shap-CAM per image: seconds, evaluations per second, peak memory."""
    explainer = ShapCAM(model, layer, device=device, path=path)
    seconds, cpu_seconds, evaluations, peaks, batch = [], [], [], [], 0
    for index, (x, target) in enumerate(images):
        peak = _peak_memory_tracker(device)
        sizes, hook = _batch_sizes(model)
        started, cpu_started = _synchronized(), time.process_time()
        result = explainer.attribute(
            x, target, block_size=block_size, n_samples=orderings, seed=index
        )
        elapsed = _synchronized() - started
        cpu_elapsed = time.process_time() - cpu_started
        hook.remove()
        if index == 0:
            continue  # warm-up: cuDNN autotuning, allocator
        seconds.append(elapsed)
        cpu_seconds.append(cpu_elapsed)
        evaluations.append(result.n_evaluations)
        peaks.append(peak())
        batch = max(batch, max(sizes))
        used_path = result.path
    median = statistics.median(seconds)
    return {
        "seconds_per_image": median,
        "cpu_seconds_per_image": statistics.median(cpu_seconds),
        "evaluations_per_image": statistics.median(evaluations),
        "evaluations_per_second": statistics.median(evaluations) / median,
        "peak_memory_mib": None if peaks[0] is None else max(peaks) / 2**20,
        "batch_size": batch,
        "path": used_path,
        "n_players": int(result.phi.size),
    }


def measure_raw_forward(model, images, layer, batch, evaluations, device) -> float:
    """Evaluations per second of the bare tail on random coalitions, ``batch`` at a time."""
    network = SplitNetwork(model, layer)
    rates = []
    generator = torch.Generator(device=device).manual_seed(0)
    for index, (x, _target) in enumerate(images):
        with torch.inference_mode():
            activation, context = network.prefix(x)
            _, _, h, w = activation.shape
            cells = torch.rand(batch, 1, h, w, device=device, generator=generator) < 0.5
            masked = torch.where(cells, activation, torch.zeros_like(activation))
            calls = max(1, round(evaluations / batch))
            started = _synchronized()
            for _ in range(calls):
                network.tail(masked, context).softmax(dim=1)
            elapsed = _synchronized() - started
        if index:
            rates.append(calls * batch / elapsed)
    return statistics.median(rates)


def _host() -> dict:
    """The CPU the host-side work runs on, its cores, and torch's threads."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor()
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads()}


def _write(out, device, dataset, entries) -> dict:
    """Write the report so far (after each scenario: a run cut short keeps what it has)."""
    report = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "tf32": {
            "cudnn": torch.backends.cudnn.allow_tf32,
            "matmul": torch.backends.cuda.matmul.allow_tf32,
        },
        # on for the run (the general path's batches keep their shapes); the local path's
        # walks turn it off for themselves
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "python": platform.python_version(),
        "host": _host(),
        "images": [sample.image_id for sample in dataset.samples[1:]],
        "warm_up_image": dataset.samples[0].image_id,
        "settings": "EfficientNet-Lite0, value prob, baseline zero, label class, antithetic",
        "ratio_to_raw_forward": "explainer's evaluations per second / raw tail forward's",
        "scenarios": entries,
    }
    Path(out).write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="ImageNet LOC folder (as shapcam evaluate)")
    parser.add_argument("--images", type=int, default=20, help="images per scenario")
    parser.add_argument("--out", default=str(HERE / "gpu.json"))
    parser.add_argument(
        "--smoke-test",
        action="store_true",
        help="on the CPU, 2 orderings per scenario: checks the script, measures nothing",
    )
    args = parser.parse_args(argv)
    if args.smoke_test:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
        torch.backends.cudnn.benchmark = True
    else:
        raise SystemExit("gpu_check needs a CUDA GPU; none is available")
    model, preprocess = load_model("efficientnet_lite0")
    model = model.to(device).eval()
    dataset = ImageNetLOC(args.data, limit=args.images + 1)
    images = [
        (preprocess(dataset.load(sample)).to(device), sample.label) for sample in dataset.samples
    ]
    entries = []
    for name, layer, block_size, path, orderings in SCENARIOS:
        orderings = 2 if args.smoke_test else orderings
        entry = {"name": name, "layer": layer, "block_size": block_size, "orderings": orderings}
        entry |= measure_explainer(model, images, layer, block_size, path, orderings, device)
        # the fast and local paths call the whole tail only to check themselves: compare
        # them with the tail's raw forward at a large batch instead
        batch = entry["batch_size"] if path == "general" else FAST_PATH_RAW_BATCH
        raw = measure_raw_forward(
            model, images, layer, batch, entry["evaluations_per_image"], device
        )
        entry["raw_forward_evaluations_per_second"] = raw
        entry["ratio_to_raw_forward"] = entry["evaluations_per_second"] / raw
        entries.append(entry)
        _write(args.out, device, dataset, entries)
        print(
            f"{name:<24} {entry['seconds_per_image']:8.4f} s/image "
            f"{entry['evaluations_per_second']:10.0f} eval/s "
            f"(raw {raw:10.0f}, ratio {entry['ratio_to_raw_forward']:.2f}) "
            f"batch {entry['batch_size']} peak {entry['peak_memory_mib']} MiB",
            flush=True,
        )
    report = _write(args.out, device, dataset, entries)
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
