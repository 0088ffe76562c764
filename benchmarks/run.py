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

This module is the report (``targets``, ``markdown``, ``main``); ``harness`` measures,
``scenarios`` holds the competitors and what is run on them.
"""

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import torch

from .harness import Key, Report, device_name, return_freed_memory
from .scenarios import LAST_STAGE, QUICK, STAGE_14, Settings, exact_games, last_stage, stage_14

HERE = Path(__file__).resolve().parent


def targets(report, settings) -> list[dict]:
    layer = LAST_STAGE
    rows = []

    def row(text, measured, met):
        rows.append({"target": text, "measured": measured, "met": bool(met)})

    ratios = [report.find(Key("shapcam", layer, m, "general")) for m in settings.orderings]
    worst = min(e["ratio_vs_peer"] for e in ratios)
    row(
        "general path >= 3x faster than captum at equal m (49 players)",
        ", ".join(f"m={e['samples']}: x{e['ratio_vs_peer']:.2f}" for e in ratios),
        worst >= 3,
    )
    m_mid = 256 if 256 in settings.orderings else settings.orderings[-1]
    fast_mid = report.find(Key("shapcam", layer, m_mid, "fast"))
    row(
        f"fast path >= 50x faster than captum at m = {m_mid}",
        f"x{fast_mid['ratio_vs_peer']:.1f}",
        fast_mid["ratio_vs_peer"] >= 50,
    )
    m_top = settings.orderings[-1]
    fast_top = report.find(Key("shapcam", layer, m_top, "fast"))
    row(
        f"fast path under 0.5 s per image at m = {m_top}",
        f"{fast_top['seconds']:.3f} s",
        fast_top["seconds"] < 0.5,
    )
    m0 = settings.orderings[0]
    anti = report.find(Key("sampling", layer, m0, "fast", variant="antithetic"))
    row(
        f"antithetic >= 3x lower MSE than plain at m = {m0} (equal evaluations)",
        f"x{anti['ratio_vs_peer']:.2f} ({settings.mse_seeds} seeds)",
        anti["ratio_vs_peer"] >= 3,
    )
    score = report.find(Key("ScoreCAM", layer))
    if score is not None:
        general_top = report.find(Key("shapcam", layer, m_top, "general"))
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
    return_freed_memory()
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
        "device": device_name(device),
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


if __name__ == "__main__":
    raise SystemExit(main())
