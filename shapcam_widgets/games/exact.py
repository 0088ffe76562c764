"""Exact Shapley values by enumerating all 2^n coalitions once."""

import math
from collections.abc import Callable

import torch

from ..errors import ShapCAMError
from .estimate import ShapleyEstimate

#: Above this many players exact enumeration (2^n evaluations) is refused.
MAX_EXACT_PLAYERS = 20

ValueFunction = Callable[[torch.Tensor], torch.Tensor]


def coalition_masks(indices: torch.Tensor, n_players: int) -> torch.Tensor:
    """Boolean masks (len(indices), n) of the coalitions whose bit patterns are ``indices``."""
    bits = torch.arange(n_players, device=indices.device)
    return (indices[:, None] >> bits) & 1 == 1


def exact_shapley(
    value_fn: ValueFunction,
    n_players: int,
    *,
    batch_size: int = 4096,
    device: torch.device | str = "cpu",
) -> ShapleyEstimate:
    """Shapley values phi_i = sum_{S not containing i} |S|!(n-|S|-1)!/n! (v(S+i) - v(S)).

    Evaluates every coalition exactly once, ``batch_size`` at a time.
    Refuses more than ``MAX_EXACT_PLAYERS`` players (2^n evaluations).
    """
    if not 1 <= n_players <= MAX_EXACT_PLAYERS:
        raise ShapCAMError(
            f"exact Shapley values need 1 to {MAX_EXACT_PLAYERS} players "
            f"(2^n evaluations); got n = {n_players}. Use permutation sampling, "
            "or group cells into blocks to reduce n."
        )
    n_coalitions = 1 << n_players
    values = torch.empty(n_coalitions, dtype=torch.float64)
    for start in range(0, n_coalitions, batch_size):
        idx = torch.arange(start, min(start + batch_size, n_coalitions), device=device)
        values[start : start + len(idx)] = value_fn(coalition_masks(idx, n_players)).double().cpu()

    # weight[s] = s! (n - s - 1)! / n! for a coalition of size s not containing i
    sizes = torch.arange(n_players, dtype=torch.float64)
    log_w = torch.lgamma(sizes + 1) + torch.lgamma(n_players - sizes) - math.lgamma(n_players + 1)
    weight = torch.exp(log_w)
    all_idx = torch.arange(n_coalitions)
    popcount = coalition_masks(all_idx, n_players).sum(dim=1)
    phi = torch.empty(n_players, dtype=torch.float64)
    for i in range(n_players):
        without_i = all_idx[(all_idx >> i) & 1 == 0]
        gains = values[without_i | (1 << i)] - values[without_i]
        phi[i] = (weight[popcount[without_i]] * gains).sum()
    return ShapleyEstimate(
        values=phi,
        stderr=torch.zeros(n_players, dtype=torch.float64),
        v_full=float(values[-1]),
        v_empty=float(values[0]),
        n_orderings=0,
        n_evaluations=n_coalitions,
        method="exact",
    )
