"""The scenarios of ``python -m benchmarks``: the competitors and what is run on them.

Competitors, each a run(seed) for ``harness.measure``: ``shapcam_runner`` (this package),
``captum_runner`` (captum's ShapleyValueSampling on the same game, through ``TailModule``;
``tune_ppe`` picks its perturbations_per_eval), ``grad_cam_runner`` (pytorch-grad-cam's
GradCAM or ScoreCAM through the evaluation's maker). Scenarios, each adding its entries to
the report under their ``Key``: ``last_stage`` (blocks.6, 49 players: speed, plain vs
antithetic sampling, equal wall time, the CAMs), ``stage_14`` (blocks.4, 196 players) and
``exact_games`` (toy games, exact enumeration). ``Settings`` sizes them (``QUICK``: tiny).
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from shapcam_widgets.cam import ShapCAM
from shapcam_widgets.evaluation.methods import make_method
from shapcam_widgets.games import exact_shapley

from .harness import Key, measure, mse

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
            Key("captum", layer, m),
            f"captum ShapleyValueSampling m={m}",
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
                Key("shapcam", layer, m, path),
                f"Shap-CAM {path} m={m}",
                players,
                run.last.n_orderings,
                timing,
                peer=Key("captum", layer, m),
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
        Key("captum", layer, m0, variant="ppe=1"),
        f"captum ShapleyValueSampling ppe=1 m={m0}",
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
        Key("tail", layer),
        f"tail forward, plain batches of {batch}",
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
        sampling = "antithetic" if antithetic else "plain"
        mses[antithetic] = report.add(
            Key("sampling", layer, m0, "fast", variant=sampling),
            f"{sampling} sampling m={m0}",
            players,
            m0,
            None,
            seconds=seconds,
            peer=Key("sampling", layer, m0, "fast", variant="plain") if antithetic else None,
            mse_value=mse(estimates, ref),
            compare="mse",
            evaluations=result.n_evaluations,
            seeds=settings.mse_seeds,
        )

    # ours vs captum at equal wall time (captum at the smallest m)
    budget = report.find(Key("captum", layer, m0))["seconds"]
    for path, explainer in (("general", general), ("fast", fast)):
        points = [report.find(Key("shapcam", layer, m, path)) for m in settings.orderings]
        slope, intercept = np.polyfit(
            [p["samples"] for p in points], [p["seconds"] for p in points], 1
        )
        affordable = int((budget - intercept) / max(slope, 1e-12)) // 2 * 2
        m_eq = max(2, min(settings.equal_time_cap, affordable))
        run = shapcam_runner(explainer, image, target, m_eq)
        timing = measure(run, settings.repeats, device, warmup=False)
        report.add(
            Key("shapcam", layer, m_eq, path, variant="captum's time"),
            f"Shap-CAM {path} at captum's time (m={m_eq})",
            players,
            run.last.n_orderings,
            timing,
            peer=Key("captum", layer, m0),
            mse_value=mse(timing.outputs, ref),
            compare="mse",
            capped=affordable > settings.equal_time_cap,
        )

    # the gradient-free and gradient CAMs people use
    top = Key("shapcam", layer, settings.orderings[-1], "fast")
    kinds = ("GradCAM", "ScoreCAM") if settings.score_cam else ("GradCAM",)
    for kind in kinds:
        run = grad_cam_runner(model, layer, image, target, kind)
        timing = measure(run, settings.repeats, device, warmup=kind == "GradCAM")
        report.add(Key(kind, layer), kind, players, None, timing, peer=top)
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
            Key("captum", layer, m),
            f"captum ShapleyValueSampling m={m}",
            players,
            m,
            captum,
            perturbations_per_eval=ppe,
        )
        run = shapcam_runner(explainer, image, target, m)
        timing = measure(run, settings.repeats, device, warmup=warm)
        assert run.last.path == "general"
        report.add(
            Key("shapcam", layer, m, "general"),
            f"Shap-CAM general m={m}",
            players,
            run.last.n_orderings,
            timing,
            peer=Key("captum", layer, m),
            evaluations=run.last.n_evaluations,
            evals_per_s=run.last.n_evaluations / timing.seconds,
            batch_size=explainer.explain(image, target).batch_size,
        )
    kinds = ("GradCAM", "ScoreCAM") if settings.score_cam else ("GradCAM",)
    top = Key("shapcam", layer, settings.stage14_orderings[-1], "general")
    for kind in kinds:
        run = grad_cam_runner(model, layer, image, target, kind)
        timing = measure(run, settings.repeats, device, warmup=kind == "GradCAM")
        report.add(Key(kind, layer), kind, players, None, timing, peer=top)
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
        report.add(
            Key("exact", "toy", n), f"exact enumeration n={n}", n, 2**n, timing, evaluations=2**n
        )
