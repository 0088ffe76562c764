"""Paired comparisons of two methods on the same images, with effect sizes and Holm.

For one metric, ``a`` and ``b`` hold the two methods' per-image scores (same images, same
order). ``paired_comparison`` reports the mean difference a - b with a bootstrap 95 %
interval, an effect size and a p-value:

- continuous metrics (Average Drop, deletion/insertion AUC, energy pointing game): the
  effect size is Cohen's d_z = mean(a - b) / sd(a - b) (the paired d; 0.2 small, 0.5
  medium, 0.8 large by Cohen's convention), the test Wilcoxon's signed-rank test;
- yes/no metrics (Increase in Confidence, pointing game): the effect size is the
  difference in proportions (already the mean difference) with Cohen's h beside it, the
  test McNemar's exact test (a binomial test on the images where the two disagree).

``holm`` adjusts the p-values of a family of comparisons (Holm 1979), controlling the
chance of any false "difference" in the family at the level asked.
"""

import numpy as np
from scipy.stats import binomtest, wilcoxon

from .metrics import bootstrap_ci


def paired_comparison(a, b, *, binary: bool = False, resamples: int = 1000, seed: int = 0) -> dict:
    """Mean difference a - b, its bootstrap 95 % interval, effect size and p-value.

    a, b: per-image scores (N,), same images in the same order. binary: 0/1 scores.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"need two 1-D arrays of equal length >= 2; got {a.shape}, {b.shape}")
    difference = a - b
    low, high = bootstrap_ci(difference, resamples, seed)
    result = {"n": len(a), "mean_difference": float(difference.mean()), "ci": [low, high]}
    if binary:
        wins, losses = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
        p = binomtest(wins, wins + losses, 0.5).pvalue if wins + losses else 1.0
        h = 2 * np.arcsin(np.sqrt(a.mean())) - 2 * np.arcsin(np.sqrt(b.mean()))
        result |= {"effect_size": float(h), "effect": "Cohen's h", "p": float(p)}
        return result
    spread = difference.std(ddof=1)
    d = difference.mean() / spread if spread > 0 else 0.0
    p = wilcoxon(difference, zero_method="zsplit").pvalue if spread > 0 else 1.0
    return result | {"effect_size": float(d), "effect": "Cohen's d_z", "p": float(p)}


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the order given (each at most 1)."""
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p)
    m = len(p)
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order]).clip(max=1.0)
    result = np.empty(m)
    result[order] = adjusted
    return result


def effect_label(effect_size: float) -> str:
    """Cohen's words for |d| or |h|: negligible (< 0.2), small, medium (>= 0.5), large (>= 0.8)."""
    size = abs(effect_size)
    if size < 0.2:
        return "negligible"
    return "small" if size < 0.5 else ("medium" if size < 0.8 else "large")
