"""Our games as shapiq games: compare our estimators with shapiq's, or use its exact computer.

shapiq (PyPI ``shapiq``, an optional dependency) implements the published Shapley-value
approximators (KernelSHAP, k-additive SHAP, SVARM, stratified and Owen sampling, ...).
``ShapiqGame`` wraps a value function of ours, a bool tensor (B, n) -> B values, as a
shapiq ``Game``; ``shapley_values`` reads the (n,) values back from shapiq's result.
"""

from collections.abc import Callable

import numpy as np
import shapiq
import torch
from shapiq import Game

ValueFunction = Callable[[torch.Tensor], torch.Tensor]


class CountingValueFunction:
    """A value function that counts the coalitions it values and calls ``value_fn`` at most
    ``batch_size`` coalitions at a time; returns float64 values on the CPU."""

    def __init__(self, value_fn: ValueFunction, batch_size: int = 4096):
        self.value_fn, self.batch_size, self.evaluations = value_fn, batch_size, 0

    def __call__(self, coalitions: torch.Tensor) -> torch.Tensor:
        self.evaluations += len(coalitions)
        if len(coalitions) == 0:
            return torch.empty(0, dtype=torch.float64)
        return torch.cat(
            [self.value_fn(chunk).double().cpu() for chunk in coalitions.split(self.batch_size)]
        )


class ShapiqGame(Game):
    """A value function of ours (a bool tensor (B, n) -> B values) as a shapiq ``Game``.

    shapiq subtracts ``normalization_value`` from every value it returns; its approximators
    and ``ExactComputer`` expect a centred game (v(empty) = 0). The normalization value
    here is v(empty) (evaluated once, unless given as ``v_empty``), so shapiq sees
    v(S) - v(empty). Shapley values do not change when a constant is subtracted, so the
    order-1 values come out in our units (``shapley_values``); the empty coalition's value
    in our units is ``v_empty`` (shapiq's ``baseline_value`` is then 0).

    ``evaluations`` counts the coalitions valued (the one for v(empty) included when it
    was evaluated here). Coalitions go to ``device`` as a bool tensor.
    """

    def __init__(
        self,
        value_fn: ValueFunction,
        n_players: int,
        *,
        v_empty: float | None = None,
        batch_size: int = 4096,
        device: torch.device | str = "cpu",
    ):
        self.counter = CountingValueFunction(value_fn, batch_size)
        self.device = torch.device(device)
        if v_empty is None:
            v_empty = float(self._values(np.zeros((1, n_players), dtype=bool))[0])
        self.v_empty = float(v_empty)
        super().__init__(n_players, normalize=True, normalization_value=self.v_empty)

    @property
    def evaluations(self) -> int:
        return self.counter.evaluations

    def _values(self, coalitions: np.ndarray) -> np.ndarray:
        masks = torch.from_numpy(np.ascontiguousarray(coalitions, dtype=bool)).to(self.device)
        return self.counter(masks).numpy()

    def value_function(self, coalitions: np.ndarray) -> np.ndarray:
        """Uncentred values (B,) of coalitions (B, n); shapiq centres them."""
        return self._values(np.atleast_2d(coalitions))


def shapley_values(values: shapiq.InteractionValues) -> np.ndarray:
    """The order-1 values (n,) of shapiq's result, float64."""
    return np.asarray(values.get_n_order_values(1), dtype=np.float64)


def exact_shapiq(game: ShapiqGame) -> np.ndarray:
    """Shapley values by shapiq's ``ExactComputer`` (2^n evaluations), in our units."""
    return shapley_values(shapiq.ExactComputer(game, game.n_players)("SV", 1))
