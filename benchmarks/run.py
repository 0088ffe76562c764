"""Shap-CAM benchmarks: speed, accuracy and memory against captum and pytorch-grad-cam.

Everything is measured in one run, on one image (scikit-image's ``chelsea``) and one game
(EfficientNet-Lite0, ImageNet weights, value "prob", baseline "zero", top-1 class):

- seconds per image of Shap-CAM's general and fast path at m = 64, 256, 1024 orderings,
  captum's ShapleyValueSampling on the same game (a wrapper module runs the network's
  tail on the activation; one feature per cell; same m; ``perturbations_per_eval`` tuned),
  pytorch-grad-cam's ScoreCAM (batch 64) and GradCAM on the same layer;
- mean squared error against a 16,384-ordering reference: plain vs antithetic sampling at
  equal evaluations (m = 64), ours vs captum at equal wall time;
- exact enumeration time on toy games with n = 16 and n = 20 players;
- the extra peak memory of each (resident set on the CPU, allocated memory on a GPU);
- the same speed table, general path only, for the 14 x 14 stage (196 players).

Medians of ``--repeats`` runs (default 3; seeds 0, 1, 2). ``ratio_vs_peer`` is the peer's
seconds over the entry's seconds (a speed-up: above 1 means faster than the peer); for
accuracy entries it is the peer's MSE over the entry's MSE.
"""

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from shapcam_widgets.cam import ShapCAM
from shapcam_widgets.evaluation.methods import make_method
from shapcam_widgets.games import exact_shapley

HERE = Path(__file__).resolve().parent
LAST_STAGE, STAGE_14 = "blocks.6", "blocks.4"


@dataclass
class Settings:
    orderings: tuple[int, ...] = (64, 256, 1024)
    repeats: int = 3
    reference: int = 16384
    mse_seeds: int = 200  # seeds for plain vs antithetic (fast path: cheap)
    stage14_orderings: tuple[int, ...] = (8,)
    exact_players: tuple[int, ...] = (16, 20)
    score_cam: bool = True
    ppe_choices: tuple[int, ...] = (1, 7, 16, 49)
    stage14_ppe_choices: tuple[int, ...] = (16, 49, 196)
    equal_time_cap: int = 4096


QUICK = Settings(
    orderings=(4, 8),
    repeats=1,
    reference=256,
    mse_seeds=4,
    stage14_orderings=(2,),
    exact_players=(8,),
    score_cam=False,
    ppe_choices=(49,),
    stage14_ppe_choices=(49,),
    equal_time_cap=64,
)


# --- measuring ---------------------------------------------------------------------------


def _proc_status_kib(key: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _return_freed_memory() -> None:
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


@dataclass
class Report:
    device: torch.device
    entries: list[dict] = field(default_factory=list)

    def add(self, name, layer, players, samples, timing, *, peer=None, mse_value=None, **extra):
        entry = {
            "name": name,
            "layer": layer,
            "players": players,
            "samples": samples,
            "seconds": timing.seconds if timing else extra.pop("seconds"),
            "peer": peer,
            "ratio_vs_peer": None,
            "mse": mse_value,
            "device": _device_name(self.device),
            "peak_mib": round(timing.peak_bytes / 2**20, 1) if timing else None,
            "all_seconds": [round(t, 4) for t in timing.all_seconds] if timing else None,
        }
        entry.update(extra)
        if peer is not None:
            other = self.find(peer, layer)
            key = "mse" if entry.get("compare") == "mse" else "seconds"
            if other is not None and other[key] and entry[key]:
                entry["ratio_vs_peer"] = other[key] / entry[key]
        self.entries.append(entry)
        print(_line(entry), flush=True)
        return entry

    def find(self, name, layer):
        return next((e for e in self.entries if e["name"] == name and e["layer"] == layer), None)


def _device_name(device: torch.device) -> str:
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


# --- the competitors ---------------------------------------------------------------------


class TailModule(nn.Module):
    """The network after the layer, as a module of the activation (captum's forward)."""

    def __init__(self, game):
        super().__init__()
        self.game = game

    def forward(self, activations: torch.Tensor) -> torch.Tensor:
        logits = self.game.network.tail(activations, self.game.context)
        return logits.softmax(dim=1) if self.game.value == "prob" else logits


def captum_runner(explainer: ShapCAM, image, target, n_samples: int, ppe: int, **options):
    """run(seed) -> phi: captum's ShapleyValueSampling on the Shap-CAM game of one image
    (options: value, baseline, as for ``ShapCAM.attribute``)."""
    from captum.attr import ShapleyValueSampling

    def run(seed: int) -> np.ndarray:
        game = explainer.game(image, target, **options)  # the prefix forward, as in ours
        h, w = game.cells
        feature_mask = game.player_of_cell.reshape(1, 1, h, w)
        torch.manual_seed(seed)
        with torch.inference_mode():
            attributions = ShapleyValueSampling(TailModule(game)).attribute(
                game.activation,
                baselines=game.baseline,
                target=game.target,
                feature_mask=feature_mask,
                n_samples=n_samples,
                perturbations_per_eval=ppe,
                show_progress=False,
            )
        return attributions[0, 0].reshape(-1).double().cpu().numpy()

    return run


def shapcam_runner(explainer: ShapCAM, image, target, n_samples: int, **options):
    def run(seed: int) -> np.ndarray:
        result = explainer.attribute(image, target, n_samples=n_samples, seed=seed, **options)
        run.last = result
        return result.phi.ravel()

    return run


def grad_cam_runner(model, layer: str, image, target, kind: str):
    """pytorch-grad-cam's GradCAM or ScoreCAM (batch 64), through the evaluation's maker."""
    maker = make_method(kind.lower(), model, layer, scorecam_batch_size=64)
    return lambda seed: maker(image, target, seed)


def tune_ppe(explainer, image, target, choices, device) -> tuple[int, dict]:
    """The fastest perturbations_per_eval for captum, timed at 2 orderings."""
    seconds = {}
    for ppe in choices:
        run = captum_runner(explainer, image, target, 2, ppe)
        seconds[ppe] = measure(run, 1, device).seconds
    return min(seconds, key=seconds.get), seconds


# --- the benchmark -----------------------------------------------------------------------


def last_stage(report, model, image, settings, device) -> dict:
    layer = LAST_STAGE
    fast = ShapCAM(model, layer, device=device)
    general = ShapCAM(model, layer, device=device, path="general")
    game = general.game(image)
    target, players = game.target, game.n_players
    info = {"target": target, "players": players, "fast_path_reason": fast.fast_path_reason}

    # reference: 16,384 orderings on the fast path (same estimates as the general path)
    explanation = fast.explain(image, target, seed=10**6)
    started = time.perf_counter()
    reference = explanation.refine(settings.reference)
    info["reference_seconds"] = time.perf_counter() - started
    info["reference_max_stderr"] = float(reference.stderr.max())
    ref = reference.phi.ravel()

    ppe, ppe_seconds = tune_ppe(general, image, target, settings.ppe_choices, device)
    info["captum_ppe"], info["captum_ppe_seconds_m2"] = ppe, ppe_seconds

    for m in settings.orderings:
        warm = m == settings.orderings[0]
        captum = measure(
            captum_runner(general, image, target, m, ppe), settings.repeats, device, warmup=warm
        )
        report.add(
            f"captum ShapleyValueSampling m={m}",
            layer,
            players,
            m,
            captum,
            mse_value=mse(captum.outputs, ref),
            perturbations_per_eval=ppe,
        )
        for path, explainer in (("general", general), ("fast", fast)):
            run = shapcam_runner(explainer, image, target, m)
            timing = measure(run, settings.repeats, device, warmup=warm)
            assert run.last.path == path
            report.add(
                f"Shap-CAM {path} m={m}",
                layer,
                players,
                run.last.n_orderings,
                timing,
                peer=f"captum ShapleyValueSampling m={m}",
                mse_value=mse(timing.outputs, ref),
                evaluations=run.last.n_evaluations,
                evals_per_s=run.last.n_evaluations / timing.seconds,
            )

    # captum's default perturbations_per_eval = 1, for reference
    m0 = settings.orderings[0]
    captum1 = measure(
        captum_runner(general, image, target, m0, 1), settings.repeats, device, warmup=False
    )
    report.add(
        f"captum ShapleyValueSampling ppe=1 m={m0}",
        layer,
        players,
        m0,
        captum1,
        mse_value=mse(captum1.outputs, ref),
        perturbations_per_eval=1,
    )

    # a plain batched forward of the tail, to see how close the general path gets
    batch = general.explain(image, target).batch_size
    coalitions = torch.rand(batch, players, generator=torch.Generator().manual_seed(0)) < 0.5
    masked = game.masked_activations(coalitions)

    def plain(_seed):
        with torch.inference_mode():
            for _ in range(20):
                game.network.tail(masked, game.context)

    timing = measure(plain, settings.repeats, device)
    report.add(
        f"tail forward, plain batches of {batch}",
        layer,
        players,
        None,
        timing,
        evaluations=20 * batch,
        evals_per_s=20 * batch / timing.seconds,
    )

    # plain vs antithetic at equal evaluations (fast path: same orderings as the general)
    mses = {}
    for antithetic in (False, True):
        explanations = [
            fast.explain(image, target, seed=seed, antithetic=antithetic)
            for seed in range(settings.mse_seeds)
        ]
        estimates, started = [], time.perf_counter()
        for explanation in explanations:
            result = explanation.refine(m0)
            estimates.append(result.phi.ravel())
        seconds = (time.perf_counter() - started) / settings.mse_seeds
        name = f"{'antithetic' if antithetic else 'plain'} sampling m={m0}"
        mses[antithetic] = report.add(
            name,
            layer,
            players,
            m0,
            None,
            seconds=seconds,
            peer=f"plain sampling m={m0}" if antithetic else None,
            mse_value=mse(estimates, ref),
            compare="mse",
            evaluations=result.n_evaluations,
            seeds=settings.mse_seeds,
        )

    # ours vs captum at equal wall time (captum at the smallest m)
    captum_entry = report.find(f"captum ShapleyValueSampling m={m0}", layer)
    budget = captum_entry["seconds"]
    for path, explainer in (("general", general), ("fast", fast)):
        points = [report.find(f"Shap-CAM {path} m={m}", layer) for m in settings.orderings]
        slope, intercept = np.polyfit(
            [p["samples"] for p in points], [p["seconds"] for p in points], 1
        )
        affordable = int((budget - intercept) / max(slope, 1e-12)) // 2 * 2
        m_eq = max(2, min(settings.equal_time_cap, affordable))
        run = shapcam_runner(explainer, image, target, m_eq)
        timing = measure(run, settings.repeats, device, warmup=False)
        report.add(
            f"Shap-CAM {path} at captum's time (m={m_eq})",
            layer,
            players,
            run.last.n_orderings,
            timing,
            peer=captum_entry["name"],
            mse_value=mse(timing.outputs, ref),
            compare="mse",
            capped=affordable > settings.equal_time_cap,
        )

    # the gradient-free and gradient CAMs people use
    top = f"Shap-CAM fast m={settings.orderings[-1]}"
    kinds = ("GradCAM", "ScoreCAM") if settings.score_cam else ("GradCAM",)
    for kind in kinds:
        run = grad_cam_runner(model, layer, image, target, kind)
        timing = measure(run, settings.repeats, device, warmup=kind == "GradCAM")
        report.add(kind, layer, players, None, timing, peer=top)
    return info


def stage_14(report, model, image, settings, device) -> dict:
    layer = STAGE_14
    explainer = ShapCAM(model, layer, device=device)
    game = explainer.game(image)
    target, players = game.target, game.n_players
    info = {"players": players, "fast_path_reason": explainer.fast_path_reason}
    ppe, ppe_seconds = tune_ppe(explainer, image, target, settings.stage14_ppe_choices, device)
    info["captum_ppe"], info["captum_ppe_seconds_m2"] = ppe, ppe_seconds
    for m in settings.stage14_orderings:
        warm = m == settings.stage14_orderings[0]
        runner = captum_runner(explainer, image, target, m, ppe)
        captum = measure(runner, settings.repeats, device, warmup=False)
        report.add(
            f"captum ShapleyValueSampling m={m}",
            layer,
            players,
            m,
            captum,
            perturbations_per_eval=ppe,
        )
        run = shapcam_runner(explainer, image, target, m)
        timing = measure(run, settings.repeats, device, warmup=warm)
        assert run.last.path == "general"
        report.add(
            f"Shap-CAM general m={m}",
            layer,
            players,
            run.last.n_orderings,
            timing,
            peer=f"captum ShapleyValueSampling m={m}",
            evaluations=run.last.n_evaluations,
            evals_per_s=run.last.n_evaluations / timing.seconds,
            batch_size=explainer.explain(image, target).batch_size,
        )
    kinds = ("GradCAM", "ScoreCAM") if settings.score_cam else ("GradCAM",)
    top = f"Shap-CAM general m={settings.stage14_orderings[-1]}"
    for kind in kinds:
        run = grad_cam_runner(model, layer, image, target, kind)
        timing = measure(run, settings.repeats, device, warmup=kind == "GradCAM")
        report.add(kind, layer, players, None, timing, peer=top)
    return info


def toy_game(n: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """A non-additive toy game: a sigmoid of a weighted vote."""
    weights = torch.rand(n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)

    def value(coalitions: torch.Tensor) -> torch.Tensor:
        share = coalitions.double() @ weights / weights.sum()
        return torch.sigmoid(8 * (share - 0.5))

    return value


def exact_games(report, settings, device) -> None:
    for n in settings.exact_players:
        game = toy_game(n)

        def run(_seed, game=game, n=n):
            return exact_shapley(game, n, batch_size=1 << 16).values.numpy()

        timing = measure(run, settings.repeats, torch.device("cpu"))
        report.add(f"exact enumeration n={n}", "toy", n, 2**n, timing, evaluations=2**n)


# --- targets and output ------------------------------------------------------------------


def targets(report, settings) -> list[dict]:
    layer = LAST_STAGE
    rows = []

    def row(text, measured, met):
        rows.append({"target": text, "measured": measured, "met": bool(met)})

    ratios = [report.find(f"Shap-CAM general m={m}", layer) for m in settings.orderings]
    worst = min(e["ratio_vs_peer"] for e in ratios)
    row(
        "general path >= 3x faster than captum at equal m (49 players)",
        ", ".join(f"m={e['samples']}: x{e['ratio_vs_peer']:.2f}" for e in ratios),
        worst >= 3,
    )
    m_mid = 256 if 256 in settings.orderings else settings.orderings[-1]
    fast_mid = report.find(f"Shap-CAM fast m={m_mid}", layer)
    row(
        f"fast path >= 50x faster than captum at m = {m_mid}",
        f"x{fast_mid['ratio_vs_peer']:.1f}",
        fast_mid["ratio_vs_peer"] >= 50,
    )
    m_top = settings.orderings[-1]
    fast_top = report.find(f"Shap-CAM fast m={m_top}", layer)
    row(
        f"fast path under 0.5 s per image at m = {m_top}",
        f"{fast_top['seconds']:.3f} s",
        fast_top["seconds"] < 0.5,
    )
    m0 = settings.orderings[0]
    anti = report.find(f"antithetic sampling m={m0}", layer)
    row(
        f"antithetic >= 3x lower MSE than plain at m = {m0} (equal evaluations)",
        f"x{anti['ratio_vs_peer']:.2f} ({settings.mse_seeds} seeds)",
        anti["ratio_vs_peer"] >= 3,
    )
    score = report.find("ScoreCAM", layer)
    if score is not None:
        general_top = report.find(f"Shap-CAM general m={m_top}", layer)
        row(
            f"Shap-CAM at m = {m_top} faster per image than ScoreCAM",
            f"fast {fast_top['seconds']:.3f} s, general {general_top['seconds']:.2f} s, "
            f"ScoreCAM {score['seconds']:.2f} s",
            fast_top["seconds"] < score["seconds"],
        )
    return rows


def markdown(meta: dict, entries: list[dict], rows: list[dict]) -> str:
    lines = [
        "# Shap-CAM benchmarks",
        "",
        f"Written by `python -m benchmarks` on {meta['date']} in {meta['total_seconds']:.0f} s.",
        f"Machine: {meta['machine']}; device: {meta['device']}; torch {meta['torch']}.",
        f"Image: scikit-image `chelsea`, EfficientNet-Lite0 (ImageNet weights), target class "
        f"{meta['last_stage']['target']}, value `prob`, baseline `zero`. Seconds are medians "
        f"of {meta['repeats']} runs (seeds 0-{meta['repeats'] - 1}) after one warm-up run, "
        "each a whole image: the forward pass to the layer included.",
        "`speed-up` = peer's seconds / this row's seconds; for MSE rows, peer's MSE / this "
        "row's MSE. MSE: mean over runs of the mean squared error per player against a "
        f"{meta['reference_orderings']:,}-ordering antithetic reference (fast path, largest "
        f"standard error {meta['last_stage']['reference_max_stderr']:.1e}). "
        "Peak: extra resident memory (CPU) or allocated memory (GPU) during a run.",
        f"captum's `perturbations_per_eval` was tuned at 2 orderings over "
        f"{sorted(meta['last_stage']['captum_ppe_seconds_m2'])}: "
        f"{meta['last_stage']['captum_ppe']} was fastest.",
        "",
        "## Targets",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    lines += [f"| {r['target']} | {r['measured']} | {'yes' if r['met'] else 'no'} |" for r in rows]
    for layer, title in (
        (LAST_STAGE, f"Last stage `{LAST_STAGE}` (320 x 7 x 7, 49 players)"),
        (STAGE_14, f"14 x 14 stage `{STAGE_14}` (112 x 14 x 14, 196 players, no fast path)"),
        ("toy", "Exact enumeration, toy games"),
    ):
        lines += [
            "",
            f"## {title}",
            "",
            "| method | m | seconds | peer | speed-up | MSE | evals/s | peak MiB |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for e in entries:
            if e["layer"] != layer:
                continue
            ratio = e["ratio_vs_peer"]
            lines.append(
                "| {} | {} | {} | {} | {} | {} | {} | {} |".format(
                    e["name"],
                    "" if e["samples"] is None else f"{e['samples']:,}",
                    f"{e['seconds']:.4g}",
                    e["peer"] or "",
                    "" if ratio is None else f"{ratio:.2f}x",
                    "" if e["mse"] is None else f"{e['mse']:.3g}",
                    f"{e['evals_per_s']:,.0f}" if e.get("evals_per_s") else "",
                    "" if e["peak_mib"] is None else f"{e['peak_mib']:.0f}",
                )
            )
    stage14 = meta.get("stage_14", {})
    lines += [
        "",
        "## Notes",
        "",
        f"- The fast path ran on `{LAST_STAGE}` (conv_head, bn2, pool, classifier are "
        f"position-wise); on `{STAGE_14}` it does not apply: "
        f"{stage14.get('fast_path_reason', '')}.",
        "- The MSE of the fast path equals the general path's at the same seeds (same "
        "orderings, estimates agree to 1e-5: tests/test_fastpath.py), so accuracy studies "
        "that need many runs use the fast path.",
        "- The general path and captum evaluate the same coalitions with the same tail and "
        "are both bound by the tail's arithmetic (compare the general path's evals/s with "
        "the plain batched tail forward); what is left between them is captum's per-step "
        "overhead. Only the fast path changes the work itself.",
    ]
    if not meta["device"].startswith("cpu"):
        lines.append(f"- GPU: {meta['device']}.")
    else:
        lines.append(
            "- No GPU was available to this run: the GPU path (device selection, chunking by "
            "memory budget, reduced precision with its float32 check) is exercised by the CPU "
            "tests in tests/test_fastpath.py only."
        )
    lines += [f"- {note}" for note in meta.get("notes", [])]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    parser.add_argument("--out", type=Path, default=HERE, help="folder for results.*")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--note", action="append", default=[], help="a line for the notes")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else Settings()
    if args.repeats:
        settings = dataclasses.replace(settings, repeats=args.repeats)

    from skimage import data

    from shapcam_widgets.cam import choose_device
    from shapcam_widgets.models import load_model

    started = time.perf_counter()
    _return_freed_memory()
    device = choose_device(args.device)
    model, preprocess = load_model("efficientnet_lite0")
    model = model.to(device)
    image = preprocess(data.chelsea()).to(device)
    report = Report(device)
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} torch threads, load average {os.getloadavg()[0]:.1f} "
        "at start",
        "device": _device_name(device),
        "torch": torch.__version__,
        "repeats": settings.repeats,
        "reference_orderings": settings.reference,
        "notes": args.note,
    }
    meta["last_stage"] = last_stage(report, model, image, settings, device)
    meta["stage_14"] = stage_14(report, model, image, settings, device)
    exact_games(report, settings, device)
    rows = targets(report, settings)
    meta["total_seconds"] = time.perf_counter() - started
    meta["load_average_end"] = os.getloadavg()[0]

    args.out.mkdir(parents=True, exist_ok=True)
    record = {"meta": meta, "targets": rows, "entries": report.entries}
    (args.out / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown(meta, report.entries, rows))
    print(f"wrote {args.out / 'results.json'} and results.md in {meta['total_seconds']:.0f} s")
    return 0
