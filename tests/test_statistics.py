"""Paired comparisons and Holm's adjustment, against hand computations."""

from math import comb

import numpy as np
import pytest

from shapcam_widgets.evaluation.statistics import effect_label, holm, paired_comparison


def test_holm_by_hand():
    # sorted: 0.005, 0.01, 0.03, 0.04 -> times 4, 3, 2, 1 -> 0.02, 0.03, 0.06, 0.04
    # -> running maximum 0.02, 0.03, 0.06, 0.06, put back in the order given
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9])[1] == 1.0  # capped at 1
    p = np.random.default_rng(0).random(20)
    adjusted = holm(p)
    assert (adjusted >= p).all() and (np.diff(adjusted[np.argsort(p)]) >= 0).all()


def test_continuous_effect_size_recovers_a_known_shift():
    rng = np.random.default_rng(0)
    n = 400
    b = rng.normal(size=n)
    a = b + 0.5 + rng.normal(size=n)  # differences: mean 0.5, sd 1 -> d_z = 0.5
    result = paired_comparison(a, b, resamples=500)
    standard_error = np.sqrt(1 / n + 0.5**2 / (2 * n))  # of d_z, about 0.053
    assert result["effect_size"] == pytest.approx(0.5, abs=3 * standard_error)
    low, high = result["ci"]
    assert low < result["mean_difference"] < high and low < 0.5 < high
    assert result["p"] < 1e-6 and result["effect"] == "Cohen's d_z"
    same = paired_comparison(b, b.copy())
    assert same["mean_difference"] == 0 and same["effect_size"] == 0 and same["p"] == 1


def test_binary_uses_mcnemar_exact_test():
    # 30 images where only a hits, 10 where only b hits, 60 where they agree
    a = np.array([1] * 30 + [0] * 10 + [1] * 40 + [0] * 20)
    b = np.array([0] * 30 + [1] * 10 + [1] * 40 + [0] * 20)
    result = paired_comparison(a, b, binary=True)
    by_hand = 2 * sum(comb(40, k) for k in range(30, 41)) / 2**40
    assert result["p"] == pytest.approx(by_hand, rel=1e-9)
    assert result["mean_difference"] == pytest.approx(0.2)
    h = 2 * np.arcsin(np.sqrt(0.7)) - 2 * np.arcsin(np.sqrt(0.5))
    assert result["effect_size"] == pytest.approx(h) and result["effect"] == "Cohen's h"


def test_effect_labels_and_bad_input():
    assert [effect_label(x) for x in (0.1, -0.3, 0.6, -1.2)] == [
        "negligible", "small", "medium", "large",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="equal length"):
        paired_comparison([1, 2, 3], [1, 2])
