"""Which Shapley estimator is best on Shap-CAM's games, at equal value-function evaluations.

``python -m benchmarks.estimators`` writes ``benchmarks/estimators.json`` (issue 12, part 2).

Games: EfficientNet-Lite0 (ImageNet weights), value "prob" of the top-1 class, baseline
"zero", on the first ``--images`` images of the ImageNet LOC subset
(``shapcam_widgets.evaluation.data.ImageNetLOC``); layers as ``NAME`` or ``NAME:BLOCK``
(``blocks.5``: 49 players; ``blocks.4:2``: 49 blocks of 2 x 2 cells; ``blocks.4``: 196).

Estimators, each given a budget b of value-function evaluations (default 1k, 4k, 16k):
our antithetic permutation sampler (``PermutationSampler``; the most orderings whose
b/(n - 1)-ish evaluations stay within b, rounded down to pairs), our plain permutation
sampler, a position-stratified variant of ours (antithetic pairs of cyclic shifts of a
random ordering, so each player takes every position once per n orderings), and every
shapiq approximator of Shapley values that runs (failures are recorded with their message).
Every estimator calls the same general-path value function through a counter: the
evaluations it actually used are recorded (shapiq spends its budget in its own way).
Each run and reference records the device it ran on (``--device``; on CUDA in full
float32, TF32 off, so that a report resumed on another device differs by rounding only).

Error: the mean over cells of the squared difference to a reference, our antithetic
sampler at ``--reference-budget`` evaluations (local or fast path when there is one: the
same estimates as the general path, faster) with its own seed. The reference's noise floor
is its mean squared standard error; since an estimate and the reference are independent
and the reference is unbiased, E[(estimate - reference)^2] = MSE(estimate) + Var(reference)
per cell, so ``mse_corrected`` subtracts the reference's mean squared standard error.
``ratio_to_ours`` is an estimator's mean MSE over ours (antithetic) at the same budget:
above 1, ours is more accurate.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import shapiq
import torch

from shapcam_widgets.games import PermutationSampler
from shapcam_widgets.games.shapiq_game import (
    CountingValueFunction,
    ShapiqGame,
    shapley_values,
)

#: The installed shapiq's version (``shapiq.__version__`` is None in 1.4.1).
SHAPIQ_VERSION = importlib.metadata.version("shapiq")

HERE = Path(__file__).resolve().parent

#: The study the issue asks for; a run that does less is labelled partial in its JSON.
FULL_STUDY = {
    "images": 20,
    "layers": ["blocks.5", "blocks.4:2", "blocks.4"],
    "budgets": [1000, 4000, 16000],
}
OURS = "ours antithetic"


# --- estimators: (value_fn, n, budget, seed, batch_size, v_empty) -> (phi, evaluations) ---


class CyclicSampler(PermutationSampler):
    """Our antithetic sampler walking cyclic shifts of a random ordering, n per ordering, in
    a random order: each player takes every position once per n orderings (stratified by
    position). Each ordering alone is uniform, so the estimate stays unbiased; the standard
    errors assume independent pairs and are not used here."""

    def _orderings(self, k: int) -> torch.Tensor:
        if not hasattr(self, "_pending"):
            self._pending: list[torch.Tensor] = []
        orders = []
        for _ in range(k):
            if not self._pending:
                n = self.n_players
                base = torch.rand(n, generator=self.generator).argsort()
                shifts = torch.rand(n, generator=self.generator).argsort().tolist()
                self._pending = [base.roll(s) for s in shifts]
            orders.append(self._pending.pop())
        orders = torch.stack(orders)
        if self.antithetic:
            orders = torch.stack([orders, orders.flip(1)], dim=1).reshape(2 * k, -1)
        return orders.to(self.device)


def orderings_for(budget: int, n_players: int, group: int) -> int:
    """The most orderings (a multiple of ``group``, at least one group) whose evaluations,
    2 + m (n - 1), stay within ``budget``."""
    groups = (budget - 2) // (group * (n_players - 1))
    return group * max(1, groups)


def ours(antithetic: bool, sampler_class=PermutationSampler):
    def run(value_fn, n, budget, seed, batch_size, v_empty):
        counter = CountingValueFunction(value_fn, batch_size)
        group = 2 if antithetic else 1
        sampler = sampler_class(counter, n, antithetic=antithetic, seed=seed, batch_size=batch_size)
        estimate = sampler.run(orderings_for(budget, n, group))
        return estimate.values.numpy(), counter.evaluations

    return run


def shapiq_class(name: str):
    """shapiq's approximator ``name``, looked up when used: one this version lacks is a
    recorded failure, not an import error."""
    cls = getattr(shapiq.approximator, name, None) or getattr(shapiq, name, None)
    if cls is None:
        raise ImportError(f"shapiq {SHAPIQ_VERSION} has no {name}")
    return cls


def shapiq_estimator(name: str, **options):
    """shapiq's approximator ``name``, built as name(n=n, random_state=seed, **options)."""

    def run(value_fn, n, budget, seed, batch_size, v_empty):
        game = ShapiqGame(value_fn, n, v_empty=v_empty, batch_size=batch_size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            approximator = shapiq_class(name)(n=n, random_state=seed, **options)
            result = approximator.approximate(budget, game)
        return shapley_values(result), game.evaluations

    return run


ESTIMATORS = {
    OURS: ours(True),
    "ours plain": ours(False),
    "ours antithetic, cyclic shifts": ours(True, CyclicSampler),
    "shapiq PermutationSamplingSV": shapiq_estimator("PermutationSamplingSV"),
    "shapiq KernelSHAP": shapiq_estimator("KernelSHAP"),
    "shapiq KernelSHAP, paired": shapiq_estimator("KernelSHAP", pairing_trick=True),
    "shapiq UnbiasedKernelSHAP": shapiq_estimator("UnbiasedKernelSHAP"),
    "shapiq kADDSHAP (k=2)": shapiq_estimator("kADDSHAP", max_order=2),
    "shapiq SVARM": shapiq_estimator("SVARM"),
    "shapiq SVARMIQ (SV)": shapiq_estimator("SVARMIQ", max_order=1, index="SV"),
    "shapiq SHAPIQ (SV)": shapiq_estimator("SHAPIQ", max_order=1, index="SV"),
    "shapiq StratifiedSamplingSV": shapiq_estimator("StratifiedSamplingSV"),
    "shapiq OwenSamplingSV": shapiq_estimator("OwenSamplingSV"),
    "shapiq SPEX (SV)": shapiq_estimator("SPEX", max_order=1, index="SV"),
    "shapiq ProxySPEX (SV)": shapiq_estimator("ProxySPEX", max_order=1, index="SV"),
}
#: Shapley-value approximators of newer shapiq versions (Python >= 3.12), used when present.
NEWER = ["RegressionMSR", "LeverageSHAP", "OddSHAP", "ShaplEIG"]
for _name in NEWER:
    if getattr(shapiq.approximator, _name, None) or getattr(shapiq, _name, None):
        ESTIMATORS[f"shapiq {_name}"] = shapiq_estimator(_name)
#: Those this shapiq version lacks.
ABSENT = {
    name: f"not in shapiq {SHAPIQ_VERSION}" for name in NEWER if f"shapiq {name}" not in ESTIMATORS
}


# --- the study ---


def parse_layer(text: str) -> tuple[str, int]:
    name, _, block = text.partition(":")
    return name, int(block) if block else 1


def _run_key(run: dict) -> tuple:
    """What one run measured: (image, budget, seed, estimator)."""
    return run["image"], run["budget"], run["seed"], run["estimator"]


def _seeds_run(game: dict, budget: int) -> list[int]:
    """The seeds of the runs of ``game`` at ``budget`` (a budget can be run with fewer
    seeds than another: 16k with one, say)."""
    return sorted({r["seed"] for r in game["runs"] if r["budget"] == budget})


def _images_done(game: dict, settings: dict, seed: int | None = None) -> dict[str, int]:
    """Per budget, how many images of ``game`` have a run of every estimator, for every seed
    run at that budget (or for ``seed`` alone), that did not fail."""
    runs = {_run_key(r) for r in game["runs"] if "error" not in r}
    done = {}
    for budget in settings["budgets"]:
        seeds = _seeds_run(game, budget) if seed is None else [seed]
        # no seed: no image is done (all() of nothing is True)
        done[str(budget)] = sum(
            bool(seeds)
            and all(
                (image, budget, each, name) in runs
                for each in seeds
                for name in settings["estimators"]
            )
            for image in game["images"]
        )
    return done


def _images_per_estimator(game: dict, settings: dict, budget: int, seed: int) -> dict:
    """Per estimator, how many images of ``game`` have a run at ``budget`` and ``seed`` that
    did not fail."""
    runs = {_run_key(r) for r in game["runs"] if "error" not in r}
    return {
        name: sum((image, budget, seed, name) in runs for image in game["images"])
        for name in settings["estimators"]
    }


def _seed_short(layer: str, game: dict, settings: dict, budget: str, seed: int, done: int) -> str:
    """What a seed that other seeds outrun lacks: its images from the first not done on, or,
    where some estimators ran on every image of it, the estimators that did not."""
    full, said = FULL_STUDY["images"], f"game {layer}, budget {budget}, seed {seed}: "
    counts = _images_per_estimator(game, settings, int(budget), seed)
    if max(counts.values()) < full:
        return said + f"images {done + 1} to {full}"
    lacking: dict[int, list[str]] = {}  # images done -> the estimators with that many
    for name, count in counts.items():
        if count < full:
            lacking.setdefault(count, []).append(name)
    return said + " and ".join(
        f"{', '.join(names)} on images {count + 1} to {full}"
        for count, names in sorted(lacking.items())
    )


def _scope(report: dict) -> dict:
    """What of the full study this report holds and what it does not (yet)."""
    settings, not_done = report["settings"], []
    games = {f"{g['layer']}:{g['block_size']}": g for g in report["games"]}
    done = {key: _images_done(g, settings) for key, g in games.items()}
    seeds = {
        key: {str(b): _seeds_run(g, b) for b in settings["budgets"]} for key, g in games.items()
    }
    done_per_seed = {  # per game, seed and budget: the images with a run of every estimator
        key: {s: _images_done(g, settings, s) for s in settings["seeds"]}
        for key, g in games.items()
    }
    for layer in FULL_STUDY["layers"]:
        name, block = parse_layer(layer)
        counts = done.get(f"{name}:{block}")
        if not counts:
            not_done.append(f"game {layer}: not run")
            continue
        for budget, count in counts.items():
            ran = seeds[f"{name}:{block}"][budget]
            per_seed = {s: done_per_seed[f"{name}:{block}"][s][budget] for s in ran}
            short = [s for s in ran if per_seed[s] < FULL_STUDY["images"]]
            if short and len(short) < len(ran):  # other seeds have every image: name these
                not_done += [
                    _seed_short(layer, games[f"{name}:{block}"], settings, budget, s, per_seed[s])
                    for s in short
                ]
            elif count < FULL_STUDY["images"]:
                not_done.append(
                    f"game {layer}, budget {budget}: images {count + 1} to {FULL_STUDY['images']}"
                )
            missing = [s for s in settings["seeds"] if s not in seeds[f"{name}:{block}"][budget]]
            if missing and count:
                not_done.append(
                    f"game {layer}, budget {budget}: seed{'s' * (len(missing) > 1)} "
                    + ", ".join(map(str, missing))
                )
    absent = [b for b in FULL_STUDY["budgets"] if b not in settings["budgets"]]
    if absent:
        not_done.append("budgets " + ", ".join(map(str, absent)))
    left_out = [name for name in ESTIMATORS if name not in settings["estimators"]]
    if left_out:
        not_done.append("estimators " + ", ".join(left_out))
    return {
        "complete": not not_done,
        "images_done": done,
        "seeds_done": seeds,
        "not_done": not_done,
        "full_study": FULL_STUDY,
    }


def summarize(records: list[dict], reference_var: dict[str, float]) -> dict:
    """Per budget and estimator: mean MSE over images and seeds, corrected for the
    reference's variance, the ratio to ours, evaluations and seconds."""
    table = {}
    for budget in sorted({r["budget"] for r in records}):
        rows = [r for r in records if r["budget"] == budget]
        ours_mse = {(r["image"], r["seed"]): r["mse"] for r in rows if r["estimator"] == OURS}
        entry = {}
        for name in dict.fromkeys(r["estimator"] for r in rows):
            runs = [r for r in rows if r["estimator"] == name]
            done = [r for r in runs if "error" not in r]
            failures = sorted({r["error"] for r in runs if "error" in r})
            if not done:
                entry[name] = {"runs": 0, "failures": failures}
                continue
            mse = float(np.mean([r["mse"] for r in done]))
            floor = float(np.mean([reference_var[r["image"]] for r in done]))
            ours_mean = float(np.mean([ours_mse[r["image"], r["seed"]] for r in done]))
            paired = [
                r["mse"] / ours_mse[r["image"], r["seed"]]
                for r in done
                if ours_mse.get((r["image"], r["seed"]), 0) > 0 and r["mse"] > 0
            ]
            evaluations = [r["evaluations"] for r in done]
            entry[name] = {
                "mse": mse,
                "mse_corrected": mse - floor,
                "ratio_to_ours": mse / ours_mean if ours_mean > 0 else None,
                "ratio_to_ours_geometric_mean": float(np.exp(np.mean(np.log(paired))))
                if paired
                else None,
                "evaluations_mean": float(np.mean(evaluations)),
                "evaluations_min": int(min(evaluations)),
                "evaluations_max": int(max(evaluations)),
                "seconds_mean": float(np.mean([r["seconds"] for r in done])),
                "runs": len(done),
                "failures": failures,
            }
        table[str(budget)] = entry
    return table


def _reference(quick, image_id, image, target, block_size, n, args, game_report):
    """The reference map of one image: our antithetic sampler at ``--reference-budget``
    evaluations with its own seed; its noise floor and summary go into ``game_report``.
    Returns (phi as float64 of shape (n,), v_empty)."""
    layer = game_report["layer"]
    started = time.perf_counter()
    explanation = quick.explain(
        image,
        target,
        value="prob",
        baseline="zero",
        block_size=block_size,
        seed=args.reference_seed,
    )
    reference = explanation.refine(orderings_for(args.reference_budget, n, 2))
    ref = reference.phi.ravel().astype(np.float64)
    stderr = np.asarray(reference.stderr, dtype=np.float64).ravel()
    game_report["reference_variance"][image_id] = float(np.mean(stderr**2))
    game_report["players"] = n
    game_report["references"] = [r for r in game_report["references"] if r["image"] != image_id]
    game_report["references"].append(
        {
            "image": image_id,
            "target": target,
            "path": explanation.path,
            "orderings": reference.n_orderings,
            "evaluations": reference.n_evaluations,
            "seconds": time.perf_counter() - started,
            "device": args.device,
            "mean_squared_stderr": game_report["reference_variance"][image_id],
            "max_stderr": float(stderr.max()),
            "mean_abs_phi": float(np.abs(ref).mean()),
            "v_full_minus_v_empty": float(ref.sum()),
        }
    )
    print(
        f"{layer}:{block_size} {image_id}: n={n}, reference {reference.n_orderings} orderings "
        f"in {game_report['references'][-1]['seconds']:.1f} s, noise floor "
        f"{game_report['reference_variance'][image_id]:.3g}",
        flush=True,
    )
    return ref, reference.v_empty


def run_game(model, images, layer, block_size, args, report, game_report) -> None:
    from shapcam_widgets import ShapCAM

    device = torch.device(args.device)
    general = ShapCAM(model, layer, device=device, path="general")
    quick = ShapCAM(model, layer, device=device, path="auto")
    records = game_report["runs"]
    reference_phi = game_report.setdefault("reference_phi", {})
    # a failed run (a package missing, say) of an image and estimator of this run runs again
    ids = {image_id for image_id, _ in images}
    records[:] = [
        r
        for r in records
        if "error" not in r or r["image"] not in ids or r["estimator"] not in args.estimators
    ]
    done = {_run_key(r) for r in records}
    for image_id, image in images:
        wanted = [
            (budget, seed, name)
            for budget in args.budgets
            for seed in args.seeds
            for name in args.estimators
            if (image_id, budget, seed, name) not in done
        ]
        if not wanted:
            print(f"{layer}:{block_size} {image_id}: done in {args.out.name}", flush=True)
            continue
        game = general.game(image, None, value="prob", baseline="zero", block_size=block_size)
        n, target = game.n_players, game.target
        batch_size = general.explain(
            image, target, value="prob", baseline="zero", block_size=block_size
        ).batch_size
        if image_id in reference_phi:  # resumed: the reference this report measured
            ref = np.asarray(reference_phi[image_id], dtype=np.float64)
            v_empty = game_report["reference_v_empty"][image_id]
        else:
            ref, v_empty = _reference(
                quick, image_id, image, target, block_size, n, args, game_report
            )
            reference_phi[image_id] = ref.tolist()
            game_report.setdefault("reference_v_empty", {})[image_id] = v_empty
            _save(args.out, report, game_report)
        for budget in args.budgets:
            for seed in args.seeds:
                for name in args.estimators:
                    if (budget, seed, name) not in wanted:
                        continue
                    record = {"image": image_id, "budget": budget, "seed": seed, "estimator": name}
                    started = time.perf_counter()
                    try:
                        phi, evaluations = ESTIMATORS[name](
                            game, n, budget, seed, batch_size, v_empty
                        )
                        phi = np.asarray(phi, dtype=np.float64).ravel()
                        if phi.shape != ref.shape or not np.isfinite(phi).all():
                            raise ValueError(
                                f"estimate of shape {phi.shape}, finite: "
                                f"{bool(np.isfinite(phi).all())}"
                            )
                        record["mse"] = float(np.mean((phi - ref) ** 2))
                        record["evaluations"] = int(evaluations)
                    except Exception as error:  # noqa: BLE001 - recorded, the study goes on
                        record["error"] = f"{type(error).__name__}: {error}"[:300]
                    record["seconds"] = time.perf_counter() - started
                    record["device"] = args.device
                    records.append(record)
                    _save(args.out, report, game_report)
            table = game_report["table"][str(budget)]  # brought up to date by _save
            print(
                f"  budget {budget}: "
                + ", ".join(
                    f"{k} {v['ratio_to_ours']:.2f}"
                    if v.get("ratio_to_ours") is not None
                    else f"{k} failed"
                    for k, v in table.items()
                ),
                flush=True,
            )
        if image_id not in game_report["images"]:
            game_report["images"].append(image_id)
        _save(args.out, report, game_report)


def _save(path: Path, report: dict, game_report: dict) -> None:
    """Write the report with ``game_report``'s table and the scope brought up to date:
    after each reference and each run, so that a run stopped at a deadline keeps them
    (--resume runs only what is missing)."""
    game_report["table"] = summarize(game_report["runs"], game_report["reference_variance"])
    report["scope"] = _scope(report)
    _write(path, report)


def markdown(report: dict) -> str:
    """The tables of a report: per game and budget, each estimator's MSE (raw and less the
    reference's noise floor), its ratio to ours and the evaluations it used."""
    lines = []
    for game in report["games"]:
        lines.append(
            f"\n{game['layer']}, block {game['block_size']} ({game['players']} players), "
            f"{len(game['images'])} images, seeds {report['settings']['seeds']}\n"
        )
        lines.append("| budget | estimator | MSE | MSE - floor | / ours | evaluations | s |")
        lines.append("| --- | --- | --- | --- | --- | --- | --- |")
        for budget, table in game["table"].items():
            for name, row in sorted(
                table.items(), key=lambda item: item[1].get("ratio_to_ours") or math.inf
            ):
                if not row["runs"]:
                    lines.append(f"| {budget} | {name} | failed: {row['failures'][0][:60]} |||||")
                    continue
                lines.append(
                    f"| {budget} | {name} | {row['mse']:.3g} | {row['mse_corrected']:.3g} | "
                    f"{row['ratio_to_ours']:.2f} | {row['evaluations_mean']:.0f} | "
                    f"{row['seconds_mean']:.1f} |"
                )
    return "\n".join(lines)


def _empty_game(layer: str, block_size: int) -> dict:
    return {
        "layer": layer,
        "block_size": block_size,
        "players": None,
        "images": [],
        "references": [],
        "reference_variance": {},
        "reference_phi": {},
        "reference_v_empty": {},
        "table": {},
        "runs": [],
    }


#: Settings two reports must share to be resumed or merged: their errors are comparable.
SHARED_SETTINGS = ("model", "value", "baseline", "target", "reference_budget", "reference_seed")


def _union(*lists) -> list:
    return list(dict.fromkeys(item for items in lists for item in items))


def _differing_setting(settings: dict, other: dict) -> str | None:
    """The first of ``SHARED_SETTINGS`` on which two reports' settings differ, if any."""
    return next((key for key in SHARED_SETTINGS if settings[key] != other[key]), None)


def _joined_settings(all_settings: list[dict]) -> dict:
    """The first settings, with the budgets, seeds, layers and estimators of all."""
    settings = dict(all_settings[0])
    for key in ("budgets", "seeds", "layers"):
        settings[key] = sorted(_union(*(s[key] for s in all_settings)))
    settings["estimators"] = _union(*(s["estimators"] for s in all_settings))
    return settings


def _commands_once(command: str) -> str:
    """``command`` with each of its "; then " parts once, in the order first run (a resume
    repeated is said once; older reports repeated some)."""
    return "; then ".join(_union(command.split("; then ")))


def _resumed(previous: dict, report: dict, parser) -> dict:
    """``previous`` (the report in --out) with this run's settings added to its own."""
    key = _differing_setting(report["settings"], previous["settings"])
    if key is not None:
        parser.error(
            f"--resume: {key} is {report['settings'][key]!r} here but "
            f"{previous['settings'][key]!r} in the report; use another --out"
        )
    new = report["settings"]
    settings = _joined_settings([previous["settings"], new])
    settings["images"] = max(settings["images"], new["images"])
    settings["shard"] = new["shard"]  # the images this run adds; merge joins the shards
    settings["command"] = _commands_once(f"{settings['command']}; then {new['command']}")
    previous["settings"] = settings
    previous["note"] = report["note"] or previous["note"]
    previous["machine"], previous["versions"] = report["machine"], report["versions"]
    return previous


def held_seconds(games: list[dict]) -> float:
    """A report's ``seconds``: those of the runs and references its games hold, each
    once (model loading left out), so that a resumed or merged report counts the same."""
    return sum(r.get("seconds", 0.0) for g in games for r in g["runs"] + g["references"])


def merge(reports: list[dict], paths) -> dict:
    """One report from several (shards of one study, runs of other layers or estimators):
    the runs of each game, without repeats (a run that ran is kept over one that failed),
    and tables recomputed over all of them (shards resumed from copies of one report share
    runs: each is kept once)."""
    first = reports[0]
    for path, other in zip(paths, reports, strict=True):
        key = _differing_setting(other["settings"], first["settings"])
        if key is not None:
            raise SystemExit(
                f"{path}: {key} is {other['settings'][key]!r}, "
                f"not {first['settings'][key]!r} as in {paths[0]}"
            )
    games: dict[tuple, dict] = {}
    for report in reports:
        for game in report["games"]:
            key = (game["layer"], game["block_size"])
            merged = games.setdefault(key, _empty_game(*key))
            merged["players"] = merged["players"] or game["players"]
            merged["images"] = _union(merged["images"], game["images"])
            seen = {r["image"] for r in merged["references"]}
            merged["references"] += [r for r in game["references"] if r["image"] not in seen]
            for name in ("reference_variance", "reference_phi", "reference_v_empty"):
                merged[name] = {**game.get(name, {}), **merged[name]}
            runs = {_run_key(r): r for r in merged["runs"]}
            for run in game["runs"]:  # the first of each; a run that ran beats one that failed
                key = _run_key(run)
                if key not in runs or ("error" in runs[key] and "error" not in run):
                    runs[key] = run
            merged["runs"] = list(runs.values())
    for game in games.values():
        game["images"].sort()
        game["table"] = summarize(game["runs"], game["reference_variance"])
    settings = _joined_settings([r["settings"] for r in reports])
    settings["images"] = max(len(g["images"]) for g in games.values())
    settings["shard"] = ", ".join(_union([r["settings"]["shard"] for r in reports]))
    settings["command"] = _commands_once(settings["command"])  # the first's; each in merged_from
    # the files are often temporary: what each held and where it ran
    settings["merged_from"] = [
        {
            "file": Path(path).name,
            "shard": r["settings"]["shard"],
            "machine": r["machine"],
            "command": _commands_once(r["settings"]["command"]),
        }
        for path, r in zip(paths, reports, strict=True)
    ]
    report = {
        **first,
        "note": " | ".join(_union(*([r["note"]] for r in reports if r["note"]))),
        "machine": " | ".join(_union([r["machine"] for r in reports])),
        "settings": settings,
        "games": list(games.values()),
        "seconds": held_seconds(list(games.values())),
    }
    report["scope"] = _scope(report)
    return report


def _write(path: Path, report: dict) -> None:
    """Written whole or not at all: a run stopped at a deadline leaves the last report."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(report, indent=1) + "\n")
    os.replace(partial, path)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.estimators", description=__doc__)
    parser.add_argument("--images", type=int, default=FULL_STUDY["images"])
    parser.add_argument("--budgets", type=int, nargs="+", default=FULL_STUDY["budgets"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--layers", nargs="+", default=FULL_STUDY["layers"])
    parser.add_argument("--reference-budget", type=int, default=2**19)
    parser.add_argument("--reference-seed", type=int, default=10**6)
    parser.add_argument("--estimators", nargs="+", default=list(ESTIMATORS))
    parser.add_argument("--skip", nargs="+", default=[], help="estimators to leave out")
    parser.add_argument("--data", default=None, help="ImageNet LOC folder (default: shared)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=HERE / "estimators.json")
    parser.add_argument("--note", default="", help="a remark stored in the report")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the runs already in --out and add only the missing ones (and run again "
        "those that failed)",
    )
    parser.add_argument(
        "--shard",
        default="0/1",
        metavar="K/N",
        help="run images K, K + N, K + 2N, ... only (K from 0): N processes can share a GPU; "
        "--merge joins their reports",
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        metavar="JSON",
        help="join these reports (shards, or runs of other layers) into --out; runs nothing",
    )
    args = parser.parse_args(argv)
    if args.merge:
        report = merge([json.loads(path.read_text()) for path in args.merge], args.merge)
        _write(args.out, report)
        print(markdown(report))
        print(f"wrote {args.out}")
        return report
    shard, shards = (int(part) for part in args.shard.split("/"))
    if not 0 <= shard < shards:
        parser.error(f"--shard {args.shard}: K must be in 0 to N - 1")
    unknown = [name for name in args.estimators + args.skip if name not in ESTIMATORS]
    if unknown:
        parser.error(f"unknown estimators {unknown}; known: {list(ESTIMATORS)}")
    args.estimators = [name for name in args.estimators if name not in args.skip]
    if OURS not in args.estimators:
        args.estimators.insert(0, OURS)
    if max(args.budgets) * 4 > args.reference_budget:
        parser.error("--reference-budget should be at least 4x the largest budget")
    if args.device.startswith("cuda"):
        # full float32, as on the CPU: TF32 convolutions move v(full) by about 5e-4, so
        # that GPU runs and CPU runs (or references) of one report differ by rounding only
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    from shapcam_widgets import load_model
    from shapcam_widgets.evaluation.data import ImageNetLOC

    model, preprocess = load_model("efficientnet_lite0")
    model = model.to(args.device).eval()
    dataset = ImageNetLOC(args.data, limit=args.images)
    images = [
        (s.image_id, preprocess(dataset.load(s)).to(args.device))
        for s in dataset.samples[shard::shards]
    ]
    report = {
        "description": __doc__.split("\n\n")[0],
        "note": args.note,
        "scope": None,
        "settings": {
            "model": "efficientnet_lite0",
            "value": "prob",
            "baseline": "zero",
            "target": "top-1 class",
            "images": args.images,
            "data": str(dataset.root),
            "budgets": args.budgets,
            "seeds": args.seeds,
            "layers": args.layers,
            "reference_budget": args.reference_budget,
            "reference_seed": args.reference_seed,
            "estimators": args.estimators,
            "absent_estimators": ABSENT,
            "device": args.device,
            "shard": args.shard,
            "command": " ".join(
                ["python -m benchmarks.estimators", *(sys.argv[1:] if argv is None else argv)]
            ),
        },
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "shapiq": SHAPIQ_VERSION,
        },
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} torch threads, load average {os.getloadavg()[0]:.1f}"
        + (f", {torch.cuda.get_device_name()}" if args.device.startswith("cuda") else ""),
        "games": [],
        "seconds": 0.0,
    }
    if args.resume and args.out.exists():
        report = _resumed(json.loads(args.out.read_text()), report, parser)
    for text in args.layers:
        layer, block_size = parse_layer(text)
        game_report = next(
            (g for g in report["games"] if (g["layer"], g["block_size"]) == (layer, block_size)),
            None,
        )
        if game_report is None:
            game_report = _empty_game(layer, block_size)
            report["games"].append(game_report)
        run_game(model, images, layer, block_size, args, report, game_report)
    report["seconds"] = held_seconds(report["games"])
    report["scope"] = _scope(report)
    _write(args.out, report)
    print(markdown(report))
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
