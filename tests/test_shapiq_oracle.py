"""shapiq as a second oracle: its ExactComputer against our ``exact_shapley`` (and our
samplers' convergence) on small games; the shapiq adapter of ``benchmarks.estimators``."""

import numpy as np
import pytest
import torch
from torch import nn

shapiq = pytest.importorskip("shapiq")

from benchmarks import estimators as est  # noqa: E402
from shapcam_widgets import ShapCAM  # noqa: E402
from shapcam_widgets.games import exact_shapley, sample_shapley  # noqa: E402
from shapcam_widgets.games.shapiq_game import ShapiqGame, exact_shapiq  # noqa: E402


def voting_game(weights, quota):
    """A weighted voting game: v(S) = 1 when the weights in S reach the quota."""
    w = torch.tensor(weights, dtype=torch.float64)
    return lambda coalitions: (coalitions.double() @ w >= quota).double()


def random_game(n, seed=0, offset=0.7):
    """A table of 2^n independent random values (no structure at all), v(empty) = offset +
    a random number."""
    table = torch.randn(1 << n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    bits = 1 << torch.arange(n)

    def value(coalitions):
        return offset + table[(coalitions.long() * bits).sum(dim=1)]

    return value


class TinyNet(nn.Module):
    """stem -> "layer" (6 x 6 x 8 for a 24 x 32 input) -> conv, BN, ReLU -> GAP -> linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
        self.layer = nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU())
        self.tail = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        return self.fc(self.tail(self.layer(self.stem(x))).mean(dim=(2, 3)))


TINY_IMAGE = torch.randn(1, 3, 24, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def tiny_net():
    torch.manual_seed(0)
    return TinyNet().eval()


@pytest.fixture(scope="module")
def cnn_game(tiny_net):
    """The tiny CNN's "layer" game: value "prob", zero baseline, 2 x 2 blocks: 3 x 4 = 12
    players."""
    explainer = ShapCAM(tiny_net, "layer", path="general")
    game = explainer.game(TINY_IMAGE, None, value="prob", block_size=2)
    assert game.n_players == 12
    return game


VOTING = voting_game([4, 3, 3, 2, 2, 1, 1, 1, 1], quota=10)
GAMES = {
    "voting": (VOTING, 9),
    "random 8": (random_game(8, seed=1), 8),
    "random 10": (random_game(10, seed=2), 10),
}


@pytest.mark.parametrize("name", GAMES)
def test_exact_agrees_with_shapiq_exact_computer(name):
    value_fn, n = GAMES[name]
    ours = exact_shapley(value_fn, n).values.numpy()
    game = ShapiqGame(value_fn, n)
    theirs = exact_shapiq(game)
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-9)
    assert game.evaluations == 1 + 2**n  # v(empty) for the normalization, then all 2^n


def test_exact_agrees_with_shapiq_on_a_cnn_layer_game(tiny_net, cnn_game):
    n = cnn_game.n_players
    ours = exact_shapley(cnn_game, n).values.numpy()
    theirs = exact_shapiq(ShapiqGame(cnn_game, n, batch_size=1000))
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-6)
    assert np.abs(ours).max() > 1e-4  # a game with something to attribute
    # the explainer's exact maps (whichever path it picks) play the same game
    result = ShapCAM(tiny_net, "layer").attribute(
        TINY_IMAGE, cnn_game.target, value="prob", block_size=2, exact=True
    )
    np.testing.assert_allclose(result.phi.ravel(), theirs, rtol=0, atol=1e-6)


@pytest.mark.parametrize("antithetic", [True, False])
@pytest.mark.parametrize("name", ["voting", "random 10"])
def test_samplers_converge_to_shapiqs_exact_values(name, antithetic):
    value_fn, n = GAMES[name]
    exact = exact_shapiq(ShapiqGame(value_fn, n))
    small = sample_shapley(value_fn, n, 200, antithetic=antithetic, seed=3)
    large = sample_shapley(value_fn, n, 3200, antithetic=antithetic, seed=4)
    for estimate in (small, large):
        z = np.abs(estimate.values.numpy() - exact) / estimate.stderr.numpy()
        assert z.max() < 5, z
    small_mse = np.mean((small.values.numpy() - exact) ** 2)
    large_mse = np.mean((large.values.numpy() - exact) ** 2)
    assert large_mse < small_mse / 4  # 16x the orderings: the MSE falls about 16x


def test_cyclic_shift_sampler_is_stratified_and_unbiased():
    value_fn, n = GAMES["random 10"]
    sampler = est.CyclicSampler(value_fn, n, seed=0)
    orders = sampler._orderings(n)[::2]  # n orderings (without their reverses)
    positions = torch.empty_like(orders).scatter_(1, orders, torch.arange(n).expand(n, n))
    for player in range(n):  # every player at every position once
        assert sorted(positions[:, player].tolist()) == list(range(n))
    # unbiased: the mean of 12 seeds within 5 standard errors (of that mean) of exact
    exact = exact_shapley(value_fn, n).values.numpy()
    runs = np.stack(
        [est.CyclicSampler(value_fn, n, seed=s).run(400).values.numpy() for s in range(12)]
    )
    stderr = runs.std(axis=0, ddof=1) / np.sqrt(len(runs))
    assert (np.abs(runs.mean(axis=0) - exact) / stderr).max() < 5


def test_adapter_centres_the_game_and_keeps_our_units():
    value_fn, n = GAMES["random 8"]
    full, empty = torch.ones(1, n, dtype=torch.bool), torch.zeros(1, n, dtype=torch.bool)
    v_full, v_empty = float(value_fn(full)), float(value_fn(empty))
    assert abs(v_empty) > 0.1  # the normalization matters
    game = ShapiqGame(value_fn, n)
    assert game.v_empty == pytest.approx(v_empty, abs=1e-12)
    assert game.normalization_value == pytest.approx(v_empty, abs=1e-12)
    assert game(np.zeros(n, dtype=bool))[0] == pytest.approx(0.0, abs=1e-12)
    assert game(np.ones(n, dtype=bool))[0] == pytest.approx(v_full - v_empty, abs=1e-12)
    # Shapley values in our units: efficiency with our v(N) - v(empty), and unchanged by
    # an offset of the value function
    exact = exact_shapiq(game)
    assert exact.sum() == pytest.approx(v_full - v_empty, abs=1e-9)
    shifted = exact_shapiq(ShapiqGame(lambda c: value_fn(c) + 1000.0, n))
    np.testing.assert_allclose(shifted, exact, rtol=0, atol=1e-9)
    result = shapiq.ExactComputer(game, n)("SV", 1)
    assert result.baseline_value == pytest.approx(0.0, abs=1e-12)
    # a given v_empty is not evaluated again
    given = ShapiqGame(value_fn, n, v_empty=v_empty)
    assert given.evaluations == 0
    given(np.ones((3, n), dtype=bool))
    assert given.evaluations == 3


def test_adapter_batches_and_counts_a_torch_value_function(cnn_game):
    calls = []

    def value_fn(coalitions):
        calls.append(len(coalitions))
        assert coalitions.dtype == torch.bool
        return cnn_game(coalitions)

    game = ShapiqGame(value_fn, cnn_game.n_players, batch_size=100)
    rng = np.random.default_rng(0)
    coalitions = rng.random((250, cnn_game.n_players)) < 0.5
    values = game(coalitions)
    direct = cnn_game(torch.from_numpy(coalitions)).double().numpy() - game.v_empty
    np.testing.assert_allclose(values, direct, rtol=0, atol=1e-12)
    assert calls == [1, 100, 100, 50]
    assert game.evaluations == 251


CHEAP = [name for name in est.ESTIMATORS if "SPEX" not in name]  # SPEX: minutes per run


@pytest.mark.parametrize("name", CHEAP)
def test_every_estimator_runs_within_its_budget(name, cnn_game):
    n = cnn_game.n_players
    exact = exact_shapley(cnn_game, n).values.numpy()
    v_empty = float(cnn_game(torch.zeros(1, n, dtype=torch.bool)))
    phi, evaluations = est.ESTIMATORS[name](cnn_game, n, 400, 0, 64, v_empty)
    assert phi.shape == (n,) and np.isfinite(phi).all()
    assert 0 < evaluations <= 400
    assert np.mean((phi - exact) ** 2) < 0.5 * np.mean(exact**2)  # better than all zeros


def test_orderings_for_a_budget():
    assert est.orderings_for(1000, 49, 2) == 20  # 2 + 20 * 48 = 962 <= 1000
    assert est.orderings_for(1000, 49, 1) == 20
    assert est.orderings_for(1000, 196, 2) == 4  # 2 + 4 * 195 = 782
    assert est.orderings_for(10, 49, 2) == 2  # at least one group


def test_summary_ratios_and_noise_floor():
    records = [
        {"image": "a", "seed": 0, "budget": 10, "estimator": est.OURS, "mse": 2.0,
         "evaluations": 9, "seconds": 1.0},
        {"image": "a", "seed": 0, "budget": 10, "estimator": "x", "mse": 6.0,
         "evaluations": 10, "seconds": 1.0},
        {"image": "a", "seed": 0, "budget": 10, "estimator": "y", "error": "E: no",
         "seconds": 0.0},
    ]  # fmt: skip
    table = est.summarize(records, {"a": 0.5})["10"]
    assert table["x"]["ratio_to_ours"] == pytest.approx(3.0)
    assert table["x"]["mse_corrected"] == pytest.approx(5.5)
    assert table[est.OURS]["evaluations_max"] == 9
    assert table["y"] == {"runs": 0, "failures": ["E: no"]}
    report = {
        "settings": {"seeds": [0]},
        "games": [
            {"layer": "l", "block_size": 1, "players": 3, "images": ["a"], "table": {"10": table}}
        ],
    }
    text = est.markdown(report)
    assert "| 10 | x | 6 | 5.5 | 3.00 | 10 | 1.0 |" in text
    assert "| 10 | y | failed: E: no |" in text


def _shard(image: str, mse: float, seconds: float) -> dict:
    runs = [
        {"image": image, "seed": 0, "budget": 10, "estimator": name, "mse": mse * factor,
         "evaluations": 10, "seconds": 1.0}
        for name, factor in ((est.OURS, 1.0), ("x", 2.0))
    ]  # fmt: skip
    settings = {
        "model": "m", "value": "prob", "baseline": "zero", "target": "top-1 class",
        "reference_budget": 40, "reference_seed": 1, "budgets": [10], "seeds": [0],
        "layers": ["l"], "estimators": [est.OURS, "x"], "images": 1, "shard": "0/1",
        "command": "python -m benchmarks.estimators --budgets 10",
    }  # fmt: skip
    game = {
        "layer": "l", "block_size": 1, "players": 3, "images": [image],
        "references": [{"image": image, "seconds": 0.5}], "reference_variance": {image: 0.0},
        "reference_phi": {image: [0.1, 0.2, 0.3]}, "reference_v_empty": {image: 0.0},
        "table": {}, "runs": runs,
    }  # fmt: skip
    return {
        "note": "",
        "settings": settings,
        "machine": "a test",
        "games": [game],
        "seconds": seconds,
    }


def test_merging_shards_joins_their_runs_once_and_recomputes_the_table():
    a, b = _shard("a", 1.0, 5.0), _shard("b", 3.0, 7.0)
    report = est.merge([a, b, a], ["a.json", "b.json", "a-again.json"])
    (game,) = report["games"]
    assert game["images"] == ["a", "b"]
    assert len(game["runs"]) == 4 and len(game["references"]) == 2
    assert game["table"]["10"]["x"]["ratio_to_ours"] == pytest.approx(2.0)
    assert game["table"]["10"][est.OURS]["mse"] == pytest.approx(2.0)  # mean of 1 and 3
    assert report["settings"]["images"] == 2
    assert report["scope"]["images_done"] == {"l:1": {"10": 2}}
    assert report["seconds"] == pytest.approx(5.0)  # 4 runs and 2 references, each once


def test_merging_keeps_a_run_that_ran_over_one_that_failed():
    failed, ran = _shard("a", 1.0, 5.0), _shard("a", 1.0, 5.0)
    failed["games"][0]["runs"][1] = {"image": "a", "seed": 0, "budget": 10, "estimator": "x",
                                     "error": "ImportError: lightgbm", "seconds": 0.0}  # fmt: skip
    ran["games"][0]["runs"][1]["mse"] = 7.0
    (game,) = est.merge([failed, ran], ["failed.json", "ran.json"])["games"]
    assert len(game["runs"]) == 2
    assert game["table"]["10"]["x"]["ratio_to_ours"] == pytest.approx(7.0)


def test_merging_refuses_reports_whose_errors_are_not_comparable():
    a, b = _shard("a", 1.0, 5.0), _shard("b", 3.0, 7.0)
    b["settings"]["reference_budget"] = 80
    with pytest.raises(SystemExit, match="b.json: reference_budget is 80, not 40"):
        est.merge([a, b], ["a.json", "b.json"])


def test_an_image_missing_a_seed_or_with_a_failed_run_is_not_counted_done():
    report = _shard("a", 1.0, 5.0)
    assert est._images_done(report["games"][0], report["settings"]) == {"10": 1}
    report["games"][0]["runs"][1] = {**report["games"][0]["runs"][1], "error": "E: no"}
    assert est._images_done(report["games"][0], report["settings"]) == {"10": 0}
    report = est.merge([_shard("a", 1.0, 5.0), _shard("b", 1.0, 5.0)], ["a.json", "b.json"])
    report["games"][0]["runs"] += [{**r, "seed": 1} for r in report["games"][0]["runs"][:2]]
    assert {r["image"] for r in report["games"][0]["runs"][-2:]} == {"a"}
    report["settings"]["seeds"] = [0, 1]
    assert est._images_done(report["games"][0], report["settings"]) == {"10": 1}  # b: seed 0


def test_a_budget_run_with_fewer_seeds_counts_its_images_and_names_the_missing_seeds(
    monkeypatch,
):
    monkeypatch.setitem(est.FULL_STUDY, "layers", ["l"])
    report = est.merge([_shard("a", 1.0, 5.0), _shard("b", 1.0, 5.0)], ["a.json", "b.json"])
    game = report["games"][0]
    game["runs"] += [{**r, "budget": 40, "seed": 1} for r in game["runs"][:2]]  # image a
    report["settings"].update(budgets=[10, 40, 160], seeds=[0, 1])  # 160: never run
    scope = est._scope(report)
    assert scope["images_done"] == {"l:1": {"10": 2, "40": 1, "160": 0}}
    assert scope["seeds_done"] == {"l:1": {"10": [0], "40": [1], "160": []}}
    assert "game l, budget 10: seed 1" in scope["not_done"]
    assert "game l, budget 40: seed 0" in scope["not_done"]


def test_a_seed_run_on_fewer_images_than_the_others_is_named(monkeypatch):
    monkeypatch.setitem(est.FULL_STUDY, "layers", ["l"])
    monkeypatch.setitem(est.FULL_STUDY, "images", 2)
    report = est.merge([_shard("a", 1.0, 5.0), _shard("b", 1.0, 5.0)], ["a.json", "b.json"])
    game = report["games"][0]
    game["runs"] += [{**r, "seed": 1} for r in game["runs"][:2]]  # image a only
    report["settings"]["seeds"] = [0, 1]
    scope = est._scope(report)
    assert scope["images_done"] == {"l:1": {"10": 1}}
    assert "game l, budget 10, seed 1: images 2 to 2" in scope["not_done"]
    assert not any(text.startswith("game l, budget 10: images") for text in scope["not_done"])


def test_a_seed_that_some_estimators_ran_on_every_image_names_the_others(monkeypatch):
    monkeypatch.setitem(est.FULL_STUDY, "layers", ["l"])
    monkeypatch.setitem(est.FULL_STUDY, "images", 2)
    report = est.merge([_shard("a", 1.0, 5.0), _shard("b", 1.0, 5.0)], ["a.json", "b.json"])
    game = report["games"][0]
    game["runs"] += [{**r, "seed": 1} for r in game["runs"] if r["estimator"] == est.OURS]
    report["settings"]["seeds"] = [0, 1]
    scope = est._scope(report)
    assert scope["images_done"] == {"l:1": {"10": 0}}
    assert "game l, budget 10, seed 1: x on images 1 to 2" in scope["not_done"]
    assert not any("seed 1: images" in text for text in scope["not_done"])
