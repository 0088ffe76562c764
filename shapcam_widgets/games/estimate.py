"""The result of a Shapley computation."""

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ShapleyEstimate:
    """Shapley values of an n-player game.

    values: (n,) float64, in units of the value function.
    stderr: (n,) float64 standard errors (zeros for exact values, NaN below two samples).
    v_full, v_empty: value of the grand coalition and of the empty one.
    n_orderings: orderings walked (0 for exact enumeration).
    n_evaluations: calls of the value function, counted per coalition.
    method: "exact", "antithetic" or "permutation".
    """

    values: torch.Tensor
    stderr: torch.Tensor
    v_full: float
    v_empty: float
    n_orderings: int
    n_evaluations: int
    method: str

    @property
    def efficiency_gap(self) -> float:
        """sum(values) - (v_full - v_empty): zero up to float64 rounding."""
        return float(self.values.sum()) - (self.v_full - self.v_empty)
