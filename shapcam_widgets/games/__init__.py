"""Game-theory core: Shapley values of any cooperative game, no CNN in it.

A *value function* maps a batch of coalitions, a boolean tensor of shape (B, n)
where ``True`` marks a present player, to a tensor of B values.
"""

from .estimate import ShapleyEstimate
from .exact import MAX_EXACT_PLAYERS, exact_shapley
from .sampling import PermutationSampler, sample_shapley

__all__ = [
    "MAX_EXACT_PLAYERS",
    "PermutationSampler",
    "ShapleyEstimate",
    "exact_shapley",
    "sample_shapley",
]
