"""The Shapley engine against the formula, the axioms, and captum."""

import itertools
import math

import pytest
import torch

from shapcam_widgets import ShapCAMError, exact_shapley, sample_shapley
from shapcam_widgets.games import MAX_EXACT_PLAYERS, PermutationSampler


def table_game(table: torch.Tensor):
    """A game given by its values on all 2^n coalitions, indexed by bit pattern."""

    def value(masks: torch.Tensor) -> torch.Tensor:
        bits = 1 << torch.arange(masks.shape[1])
        return table[(masks.long() * bits).sum(dim=1)]

    return value


def random_game(n: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    return table_game(torch.randn(1 << n, generator=generator, dtype=torch.float64))


def saturating_game(weights: torch.Tensor):
    """v(S) = 1 - exp(-sum_{i in S} w_i): concave in the coalition's weight."""
    return lambda masks: 1 - torch.exp(-(masks.double() * weights).sum(dim=1))


def brute_force_shapley(value, n: int) -> torch.Tensor:
    """Average of marginal contributions over all n! orderings."""
    phi = torch.zeros(n, dtype=torch.float64)
    for order in itertools.permutations(range(n)):
        mask = torch.zeros(1, n, dtype=torch.bool)
        before = float(value(mask))
        for player in order:
            mask[0, player] = True
            after = float(value(mask))
            phi[player] += after - before
            before = after
    return phi / math.factorial(n)


@pytest.mark.parametrize("n, seed", [(1, 0), (3, 1), (5, 2), (6, 3)])
def test_exact_equals_brute_force(n, seed):
    game = random_game(n, seed)
    estimate = exact_shapley(game, n)
    torch.testing.assert_close(estimate.values, brute_force_shapley(game, n), rtol=0, atol=1e-12)
    assert estimate.n_evaluations == 2**n


def test_exact_small_batches_match_one_batch():
    game = random_game(7, 4)
    torch.testing.assert_close(
        exact_shapley(game, 7, batch_size=5).values, exact_shapley(game, 7).values
    )


def symmetric_dummy_game():
    """Players 0 and 1 are symmetric; player 4 is a dummy; 2 and 3 interact."""
    weights = torch.tensor([1.0, 1.0, 0.5, 2.0, 0.0], dtype=torch.float64)

    def value(masks):
        m = masks.double()
        return torch.tanh(m @ weights) + 0.3 * m[:, 2] * m[:, 3]

    return value


def estimators():
    return {
        "exact": lambda game, n: exact_shapley(game, n),
        "antithetic": lambda game, n: sample_shapley(game, n, 64, seed=3),
        "plain": lambda game, n: sample_shapley(game, n, 64, seed=3, antithetic=False),
    }


@pytest.mark.parametrize("name", ["exact", "antithetic", "plain"])
def test_efficiency(name):
    game = random_game(6, 5)
    estimate = estimators()[name](game, 6)
    assert abs(estimate.efficiency_gap) < 1e-12
    assert estimate.v_full == float(game(torch.ones(1, 6, dtype=torch.bool)))


@pytest.mark.parametrize("name", ["exact", "antithetic", "plain"])
def test_dummy_player_gets_zero(name):
    estimate = estimators()[name](symmetric_dummy_game(), 5)
    assert estimate.values[4] == 0


def test_symmetry_exact():
    estimate = exact_shapley(symmetric_dummy_game(), 5)
    assert abs(estimate.values[0] - estimate.values[1]) < 1e-14


@pytest.mark.parametrize("antithetic", [True, False])
def test_symmetry_sampled_within_standard_errors(antithetic):
    estimate = sample_shapley(symmetric_dummy_game(), 5, 400, seed=1, antithetic=antithetic)
    gap = abs(estimate.values[0] - estimate.values[1])
    assert gap < 4 * math.hypot(estimate.stderr[0], estimate.stderr[1])


@pytest.mark.parametrize("name", ["exact", "antithetic", "plain"])
def test_linearity(name):
    first, second = random_game(5, 6), random_game(5, 7)
    combined = lambda masks: 2.0 * first(masks) - 0.5 * second(masks)  # noqa: E731
    run = estimators()[name]
    expected = 2.0 * run(first, 5).values - 0.5 * run(second, 5).values
    torch.testing.assert_close(run(combined, 5).values, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("antithetic", [True, False])
def test_sampled_within_four_standard_errors_of_exact(seed, antithetic):
    game = random_game(8, 10 + seed)
    truth = exact_shapley(game, 8).values
    estimate = sample_shapley(game, 8, 512, seed=seed, antithetic=antithetic)
    z = (estimate.values - truth).abs() / estimate.stderr
    assert z.max() < 4.5, z  # 8 players: P(any |z| > 4.5) is about 5e-5
    assert (z < 2).double().mean() > 0.5


def test_antithetic_beats_plain_at_equal_cost():
    weights = torch.linspace(0.05, 0.6, 10, dtype=torch.float64)
    game = saturating_game(weights)
    truth = exact_shapley(game, 10).values
    mse = {True: 0.0, False: 0.0}
    for seed in range(20):
        for antithetic in mse:
            estimate = sample_shapley(game, 10, 16, seed=seed, antithetic=antithetic)
            mse[antithetic] += float(((estimate.values - truth) ** 2).mean())
    assert mse[True] < mse[False] / 2


def test_standard_errors_shrink_as_one_over_root_m():
    game = random_game(6, 8)
    small = sample_shapley(game, 6, 100, seed=0).stderr.mean()
    large = sample_shapley(game, 6, 1600, seed=0).stderr.mean()
    assert 2.5 < small / large < 6  # expected ratio sqrt(16) = 4


def test_same_seed_is_bit_identical_and_batch_size_does_not_matter():
    game = random_game(7, 9)
    first = sample_shapley(game, 7, 50, seed=11)
    again = sample_shapley(game, 7, 50, seed=11)
    assert torch.equal(first.values, again.values) and torch.equal(first.stderr, again.stderr)
    rebatched = sample_shapley(game, 7, 50, seed=11, batch_size=7)
    torch.testing.assert_close(rebatched.values, first.values, rtol=0, atol=1e-12)
    other = sample_shapley(game, 7, 50, seed=12)
    assert not torch.equal(first.values, other.values)


def test_more_samples_extend_earlier_ones():
    game = random_game(6, 2)
    sampler = PermutationSampler(game, 6, seed=4)
    sampler.run(10)
    extended = sampler.run(30)
    assert extended.n_orderings == 40
    torch.testing.assert_close(
        extended.values, sample_shapley(game, 6, 40, seed=4).values, rtol=0, atol=1e-12
    )


def test_orderings_and_evaluations_are_counted():
    estimate = sample_shapley(random_game(5, 0), 5, 7, seed=0)
    assert estimate.n_orderings == 8  # rounded up to pairs
    assert estimate.n_evaluations == 8 * (5 - 1) + 2
    assert sample_shapley(random_game(5, 0), 5, 7, antithetic=False).n_orderings == 7


def test_tolerance_stops_early():
    game = random_game(6, 1)
    estimate = sample_shapley(game, 6, 100_000, seed=0, tol=0.05, batch_size=50)
    assert estimate.n_orderings < 100_000
    assert float(estimate.stderr.max()) < 0.05


def test_progress_reports_until_done():
    calls = []
    sample_shapley(
        random_game(4, 0), 4, 20, batch_size=6, progress=lambda d, t: calls.append((d, t))
    )
    assert calls[-1] == (20, 20) and len(calls) > 1


def test_one_sample_has_no_standard_error():
    estimate = sample_shapley(random_game(4, 0), 4, 1, antithetic=False)
    assert torch.isnan(estimate.stderr).all()


def test_bad_arguments_are_refused():
    with pytest.raises(ShapCAMError, match="at most|1 to 20"):
        exact_shapley(random_game(3, 0), MAX_EXACT_PLAYERS + 1)
    with pytest.raises(ShapCAMError, match="orderings must be a whole number >= 1"):
        sample_shapley(random_game(3, 0), 3, 0)
    with pytest.raises(ShapCAMError, match="orderings must be a whole number >= 1; got 2.5"):
        sample_shapley(random_game(3, 0), 3, 2.5)
    with pytest.raises(ShapCAMError, match="at least one player"):
        sample_shapley(random_game(3, 0), 0, 5)
    with pytest.raises(ShapCAMError, match=r"seed must be a whole number from 0 to 2\*\*64 - 1"):
        sample_shapley(random_game(3, 0), 3, 2, seed=2**64)


def test_stop_ends_a_run_after_the_current_batch():
    """The anytime cancel: stop() is asked after each batch of orderings."""
    sampler = PermutationSampler(random_game(4, 0), 4, batch_size=6)  # one pair per batch
    asked = []
    estimate = sampler.run(100, stop=lambda: asked.append(1) or len(asked) >= 3)
    assert estimate.n_orderings == sampler.n_orderings == 6 and len(asked) == 3
    assert estimate.efficiency_gap == pytest.approx(0, abs=1e-12)
    assert sampler.run(2).n_orderings == 8  # a later run goes on from there


def test_agrees_with_captum():
    from captum.attr import ShapleyValues, ShapleyValueSampling

    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    network = network.double()
    x = torch.randn(1, 6, dtype=torch.float64)

    def forward(inputs):
        return network(inputs)[:, 0]

    def game(masks):
        with torch.no_grad():
            return forward(x * masks.double())

    ours = exact_shapley(game, 6).values
    theirs = ShapleyValues(forward).attribute(x, baselines=0.0)[0].double()
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)  # captum answers in float32

    sampled = sample_shapley(game, 6, 400, seed=0)
    captum_sampled = ShapleyValueSampling(forward).attribute(x, baselines=0.0, n_samples=400)[0]
    captum_sampled = captum_sampled.double()
    assert ((sampled.values - ours).abs() < 4 * sampled.stderr + 1e-12).all()
    # captum walks plain orderings: judge it by the standard error of our plain estimator
    plain_stderr = sample_shapley(game, 6, 400, seed=0, antithetic=False).stderr
    assert ((captum_sampled - ours).abs() < 4.5 * plain_stderr).all()
