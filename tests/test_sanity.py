"""scripts/sanity_checks.py (Adebayo et al.'s model-parameter randomisation): the cascade
re-initialises exactly the intended modules and never the caller's model, a deterministic
method scores 1 at step 0, records resume; and the Quantus 0.6 cross-checks (its MPRT
layer generator, RelevanceMassAccuracy, PointingGame) against this package's metrics."""

import copy
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_evaluation import make_loc  # a synthetic LOC folder; its first 2 images are valid
from torch import nn

from shapcam_widgets.errors import ShapCAMError
from shapcam_widgets.evaluation import metrics
from shapcam_widgets.models import Preprocess

quantus = pytest.importorskip("quantus")

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "sanity_checks.py"
N_CLASSES = 10
SIZE = 32


def load_script():
    spec = importlib.util.spec_from_file_location("sanity_checks", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sanity = load_script()


class TinyNet(nn.Module):
    """stem -> blocks (2 stages) -> 1x1 head + batch norm -> GAP -> linear."""

    def __init__(self):
        super().__init__()
        self.conv_stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.blocks = nn.Sequential(
            nn.Sequential(nn.Conv2d(8, 12, 3, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(12, 16, 3, stride=2, padding=1), nn.ReLU()),
        )
        self.conv_head = nn.Conv2d(16, 24, 1)
        self.bn2 = nn.BatchNorm2d(24)
        self.act = nn.ReLU()
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(24, N_CLASSES)

    def forward(self, x):
        x = self.blocks(torch.relu(self.bn1(self.conv_stem(x))))
        x = self.act(self.bn2(self.conv_head(x)))
        return self.classifier(self.global_pool(x).flatten(1))


def tiny_model() -> nn.Module:
    """Seeded, with batch-norm statistics and affine terms away from their defaults."""
    torch.manual_seed(0)
    model = TinyNet()
    with torch.no_grad():
        for bn in (model.bn1, model.bn2):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
            bn.running_mean.uniform_(-0.1, 0.1)
            bn.running_var.uniform_(0.5, 2.0)
        model.classifier.weight.mul_(4)
    return model.eval()


def snapshot(model: nn.Module) -> dict:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def owner(name: str) -> str:
    return name.rsplit(".", 1)[0]


def check_cascade(model: nn.Module, expected_stages: list[str]):
    before = snapshot(model)
    plan = sanity.stages(model)
    assert [name for name, _ in plan] == expected_stages
    listed = [module for _, modules in plan for module in modules]
    resettable = [n for n, m in model.named_modules() if hasattr(m, "reset_parameters")]
    assert sorted(listed) == sorted(resettable) and len(set(listed)) == len(listed)
    work = None
    # one copy modified in place from step to step: checked as the cascade goes
    for (step, stage, modules, work), (name, _) in zip(
        sanity.cascade(model, seed=42), [("trained", []), *plan], strict=True
    ):
        assert stage == name
        assert modules == [m for _, ms in plan[:step] for m in ms]
        assert work is not model and not work.training
        for key, value in work.state_dict().items():
            if owner(key) not in modules:
                assert torch.equal(value, before[key]), (step, key)
            elif not key.endswith("num_batches_tracked"):
                assert not torch.equal(value, before[key]), (step, key)
        # the caller's model is never modified
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # after the last step every parameter has been re-initialised
    final = dict(work.named_parameters())
    assert all(not torch.equal(final[k], before[k]) for k, _ in model.named_parameters())


def test_cascade_changes_exactly_the_stage_modules():
    check_cascade(tiny_model(), ["classifier", "head", "blocks.1", "blocks.0", "stem"])


def test_cascade_on_efficientnet_lite0(lite0):
    model, _ = lite0
    stages = ["classifier", "head", *[f"blocks.{i}" for i in range(6, -1, -1)], "stem"]
    check_cascade(model, stages)


def test_reinitialisation_is_quantus_mprt_generator():
    """Our cascade after stage k == Quantus's top-down generator after the stage's last
    module (PyTorch's reset_parameters with torch.manual_seed(seed + 1) per module)."""
    from quantus.helpers.model.pytorch_model import PyTorchModel

    model = tiny_model()
    plan = sanity.stages(model)
    ours = [snapshot(work) for _, _, _, work in sanity.cascade(model, seed=7)]
    theirs = {
        name: snapshot(random_model)
        for name, random_model in PyTorchModel(copy.deepcopy(model)).get_random_layer_generator(
            order="top_down", seed=7
        )
    }
    order = list(theirs)
    for step, (_, modules) in enumerate(plan, start=1):
        last = max(modules, key=order.index)
        for key, value in ours[step].items():
            assert torch.equal(value, theirs[last][key]), (step, key)


def test_step_zero_of_a_deterministic_method_is_one():
    model, x = tiny_model(), torch.randn(1, 3, SIZE, SIZE)
    config = {"layers": ["blocks.1"], "methods": ["gradcam", "shapcam"], "orderings": 8, "seed": 0}
    plan = sanity.stages(model)
    result = sanity.explain_image(model, x, 3, 5, config, plan, {"blocks.1": (8, 8)})
    gradcam = result["layers"]["blocks.1"]["gradcam"]
    for score in sanity.SCORES:
        assert len(gradcam[score]) == len(plan) + 1
        assert gradcam[score][0] == pytest.approx(1.0)
    shapcam = result["layers"]["blocks.1"]["shapcam"]
    assert shapcam["reference"]["n_orderings"] == 8 and len(shapcam["maps"]) == len(plan) + 1
    assert -1 <= shapcam["spearman"][0] <= 1  # two seeds: the ceiling, not 1
    assert result["target_probability"][0] != result["target_probability"][1]


def test_scores():
    rng = np.random.default_rng(0)
    a = rng.random((56, 56))
    assert sanity.pool(a, (7, 7)) == pytest.approx(a.reshape(7, 8, 7, 8).mean((1, 3)))
    assert sanity.spearman(a, 2 * a + 1) == pytest.approx(1.0)
    assert sanity.spearman(a, -a) == pytest.approx(-1.0)
    assert np.isnan(sanity.spearman(a, np.zeros_like(a)))
    assert sanity.ssim(a, 3 * a - 2) == pytest.approx(1.0)  # min-max scaled first
    scores = sanity.compare(a, -a, (7, 7))
    assert scores["spearman"] == pytest.approx(-1.0)
    assert scores["spearman_abs"] == pytest.approx(1.0)  # |-a| = |a|


def test_run_writes_records_resumes_and_refuses_another_config(tmp_path, monkeypatch):
    root = make_loc(tmp_path / "loc")
    out = tmp_path / "sanity"
    argv = ["--data", str(root), "--limit", "2", "--orderings", "4", "--layer", "blocks.1"]
    argv += ["--methods", "shapcam,gradcam", "--out", str(out), "--no-progress"]
    summary = sanity.run(sanity.parse_args(argv), tiny_model(), Preprocess(SIZE))
    lines = (out / "records.jsonl").read_text().splitlines()
    assert len(lines) == 3 and "config" in json.loads(lines[0])
    assert summary["n_images"] == 2 and summary["complete"]
    written = json.loads((out / "sanity.json").read_text())
    rows = written["results"]["blocks.1"]["gradcam"]["steps"]
    assert [r["stage"] for r in rows] == [
        "trained",
        "classifier",
        "head",
        "blocks.1",
        "blocks.0",
        "stem",
    ]
    assert rows[0]["spearman"]["median"] == 1.0
    assert written["note"]["images"]["count"] == 2
    assert written["results"]["blocks.1"]["shapcam"]["between_images"]["n_pairs"] == 1
    # a rerun makes no map: every image is done
    monkeypatch.setattr(sanity, "explain_image", lambda *a, **k: pytest.fail("recomputed"))
    sanity.run(sanity.parse_args(argv), tiny_model(), Preprocess(SIZE))
    assert len((out / "records.jsonl").read_text().splitlines()) == 3
    with pytest.raises(ShapCAMError, match="another configuration"):
        sanity.run(sanity.parse_args([*argv, "--orderings", "8"]), tiny_model(), Preprocess(SIZE))


def test_quantus_mprt_cross_check_on_tiny_model(tmp_path):
    root = make_loc(tmp_path / "loc")
    argv = ["--data", str(root), "--limit", "2", "--layer", "blocks.1", "--quantus-images", "2"]
    report = sanity.run(
        sanity.parse_args([*argv, "--out", str(tmp_path / "q")]), tiny_model(), Preprocess(SIZE)
    )
    assert report["n_quantus_steps"] == len(
        [m for m in tiny_model().modules() if hasattr(m, "reset_parameters")]
    )
    assert report["max_abs_difference"] < 1e-12 and report["nan_in_one_only"] == 0
    assert (tmp_path / "q" / "quantus_mprt.json").exists()


# ---------------------------------------------------------------- Quantus localisation


def boxes_and_maps(n=6, size=SIZE, seed=0):
    """Non-negative maps with a unique maximum, and box masks from metrics.box_mask."""
    rng = np.random.default_rng(seed)
    maps, masks = [], []
    for _ in range(n):
        x1, y1 = rng.integers(0, size // 2, 2)
        x2, y2 = x1 + rng.integers(4, size // 2), y1 + rng.integers(4, size // 2)
        masks.append(metrics.box_mask([(x1, y1, x2, y2)], (size, size), (size, size)))
        maps.append(rng.random((size, size)) ** 3)
    return np.stack(maps), np.stack(masks)


def quantus_score(metric, maps, masks):
    n = len(maps)
    return np.asarray(
        metric(
            model=None,
            x_batch=np.zeros((n, 3, *maps.shape[1:]), dtype=np.float32),
            y_batch=np.zeros(n, dtype=int),
            a_batch=maps[:, None].astype(np.float32),
            s_batch=masks[:, None].astype(np.float32),
        ),
        dtype=float,
    )


def test_quantus_relevance_mass_accuracy_is_energy_pointing_game():
    maps, masks = boxes_and_maps()
    ours = [metrics.energy_pointing_game(m, s) for m, s in zip(maps, masks, strict=True)]
    for normalise in (True, False):  # normalise_by_max: a positive factor, no change
        metric = quantus.RelevanceMassAccuracy(normalise=normalise, disable_warnings=True)
        assert quantus_score(metric, maps, masks) == pytest.approx(ours, rel=1e-6)
    # where they differ: an all-zero map is 0 here and NaN (0 / 0) in Quantus
    zero = maps.copy()
    zero[0] = 0
    metric = quantus.RelevanceMassAccuracy(normalise=False, disable_warnings=True)
    with np.errstate(invalid="ignore"):
        assert np.isnan(quantus_score(metric, zero, masks)[0])
    assert metrics.energy_pointing_game(zero[0], masks[0]) == 0.0


def test_quantus_pointing_game_against_ours():
    maps, masks = boxes_and_maps(seed=1)
    metric = quantus.PointingGame(disable_warnings=True)
    ours = [metrics.pointing_game(m, s) for m, s in zip(maps, masks, strict=True)]
    assert quantus_score(metric, maps, masks) == pytest.approx(ours)  # unique maxima: equal

    # 1. An empty mask: Quantus means NaN but writes it into a bool array, where NaN
    #    becomes True: the image counts as a hit. Ours: a miss (0).
    empty = masks.copy()
    empty[0] = False
    assert quantus_score(metric, maps, empty)[0] == 1.0
    assert metrics.pointing_game(maps[0], empty[0]) == 0.0
    # 2. Tied maxima: Quantus scores a hit if ANY maximum is in the mask; ours takes the
    #    first maximum in raster order. An all-zero map is the extreme case.
    tied = maps.copy()
    inside = np.argwhere(masks[1])[0]
    tied[1] = 0.0
    tied[1][inside[0], inside[1]] = 1.0
    tied[1][0, 0] = 1.0  # (0, 0) is outside the mask and first in raster order
    assert not masks[1][0, 0]
    assert quantus_score(metric, tied, masks)[1] == 1.0
    assert metrics.pointing_game(tied[1], masks[1]) == 0.0
    flat = maps.copy()
    flat[1] = 0.0
    assert quantus_score(metric, flat, masks)[1] == 1.0
    assert metrics.pointing_game(flat[1], masks[1]) == 0.0
