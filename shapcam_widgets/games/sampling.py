"""Permutation sampling of Shapley values (Castro et al. 2009), antithetic by default.

Each ordering of the players is walked once, adding one player at a time; the value
change at each step is that player's marginal contribution. The empty and the full
coalition are evaluated once and shared by every ordering, so each ordering's
marginals sum to v(N) - v(empty) and every estimate satisfies efficiency exactly.
"""

import numbers
from collections.abc import Callable

import torch

from ..errors import ShapCAMError
from .estimate import ShapleyEstimate
from .exact import ValueFunction

Progress = Callable[[int, int], None]

#: torch.Generator takes seeds from 0 to 2**64 - 1.
MAX_SEED = 2**64 - 1


def check_count(name: str, count) -> None:
    """Raise ShapCAMError unless ``count`` is a whole number >= 1 (not a bool)."""
    if not isinstance(count, numbers.Integral) or isinstance(count, bool) or count < 1:
        raise ShapCAMError(f"{name} must be a whole number >= 1; got {count!r}")


def check_seed(seed) -> None:
    """Raise ShapCAMError unless ``seed`` is a whole number from 0 to MAX_SEED."""
    if (
        not isinstance(seed, numbers.Integral)
        or isinstance(seed, bool)
        or not 0 <= seed <= MAX_SEED
    ):
        raise ShapCAMError(f"seed must be a whole number from 0 to 2**64 - 1; got {seed!r}")


class PermutationSampler:
    """Accumulates permutation samples of a game; more samples extend earlier ones.

    Parameters
    ----------
    value_fn: maps a bool tensor (B, n) of coalitions to B values. A value function with
        a ``walk(orders)`` method (K x n orderings -> K x (n - 1) values of the coalitions
        after 1 .. n-1 players) is walked ordering by ordering instead (the local path).
    n_players: n.
    antithetic: walk each random ordering together with its reverse; the pair's mean
        marginals form one sample of the standard error.
    seed: seeds a CPU ``torch.Generator``: the same seed and settings give bit-identical
        results on the CPU; another batch size changes only the rounding.
    batch_size: at most this many coalitions per call of ``value_fn`` (the memory bound).
    device: where the coalition masks are built.
    """

    def __init__(
        self,
        value_fn: ValueFunction,
        n_players: int,
        *,
        antithetic: bool = True,
        seed: int = 0,
        batch_size: int = 4096,
        device: torch.device | str = "cpu",
    ):
        if n_players < 1:
            raise ShapCAMError(f"a game needs at least one player; got n = {n_players}")
        check_count("batch_size", batch_size)
        check_seed(seed)
        self.value_fn = value_fn
        self.n_players = n_players
        self.antithetic = antithetic
        self.seed = seed
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(int(seed))
        ends = torch.zeros(2, n_players, dtype=torch.bool, device=self.device)
        ends[1] = True
        v_empty, v_full = value_fn(ends).double().cpu().tolist()
        self.v_empty, self.v_full = v_empty, v_full
        self.n_evaluations = 2
        self.n_orderings = 0
        self._n_samples = 0
        self._sum = torch.zeros(n_players, dtype=torch.float64)
        self._sum_sq = torch.zeros(n_players, dtype=torch.float64)

    def run(
        self,
        n_orderings: int,
        *,
        tol: float | None = None,
        progress: Progress | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> ShapleyEstimate:
        """Walk ``n_orderings`` more orderings (rounded up to pairs when antithetic).

        tol: stop early once the largest standard error is below it.
        progress: called as ``progress(done, total)`` after each batch of orderings.
        stop: called after each batch of orderings; True ends the run there (a cancel).
        """
        check_count("the number of orderings", n_orderings)
        group = 2 if self.antithetic else 1
        n_groups = -(-n_orderings // group)
        groups_per_chunk = max(1, self.batch_size // (group * max(1, self.n_players - 1)))
        done = 0
        while done < n_groups:
            k = min(groups_per_chunk, n_groups - done)
            self._add(self._walk(self._orderings(k)))
            done += k
            if progress is not None:
                progress(done * group, n_groups * group)
            if tol is not None and self._n_samples >= 2 and float(self.stderr().max()) < tol:
                break
            if stop is not None and stop():
                break
        return self.estimate()

    def _orderings(self, k: int) -> torch.Tensor:
        """(k * group, n) orderings; an antithetic pair is an ordering and its reverse."""
        orders = torch.rand(k, self.n_players, generator=self.generator).argsort(dim=1)
        if self.antithetic:
            orders = torch.stack([orders, orders.flip(1)], dim=1).reshape(2 * k, -1)
        return orders.to(self.device)

    def _walk(self, orders: torch.Tensor) -> torch.Tensor:
        """Marginal contributions (len(orders), n) of each player along each ordering."""
        n_orders, n = orders.shape
        positions = torch.arange(n, device=self.device)
        rank = torch.empty_like(orders).scatter_(1, orders, positions.expand(n_orders, n))
        # coalition after the first t players of each ordering, t = 1 .. n-1
        steps = positions[1:]
        if hasattr(self.value_fn, "walk"):  # a value function that follows orderings itself
            inner = self.value_fn.walk(orders).double().cpu().reshape(-1)
        else:
            masks = (rank[:, None, :] < steps[None, :, None]).reshape(-1, n)
            inner = (
                torch.cat(
                    [self.value_fn(chunk).double().cpu() for chunk in masks.split(self.batch_size)]
                )
                if len(masks)
                else torch.empty(0, dtype=torch.float64)
            )
        self.n_evaluations += n_orders * (n - 1)
        chain = torch.cat(
            [
                torch.full((n_orders, 1), self.v_empty, dtype=torch.float64),
                inner.reshape(n_orders, n - 1),
                torch.full((n_orders, 1), self.v_full, dtype=torch.float64),
            ],
            dim=1,
        )
        gains = chain.diff(dim=1)
        return torch.zeros(n_orders, n, dtype=torch.float64).scatter_(1, orders.cpu(), gains)

    def _add(self, marginals: torch.Tensor) -> None:
        self.n_orderings += len(marginals)
        if self.antithetic:
            marginals = marginals.reshape(-1, 2, self.n_players).mean(dim=1)
        self._n_samples += len(marginals)
        self._sum += marginals.sum(dim=0)
        self._sum_sq += (marginals**2).sum(dim=0)

    def stderr(self) -> torch.Tensor:
        """(n,) standard errors of the current estimate; NaN below two samples."""
        count = self._n_samples
        if count < 2:
            return torch.full((self.n_players,), float("nan"), dtype=torch.float64)
        mean = self._sum / count
        variance = ((self._sum_sq - count * mean**2) / (count - 1)).clamp(min=0)
        return (variance / count).sqrt()

    def estimate(self) -> ShapleyEstimate:
        """The estimate from every ordering walked so far."""
        if self._n_samples == 0:
            raise ShapCAMError("no orderings sampled yet: call run(n_orderings) first")
        return ShapleyEstimate(
            values=self._sum / self._n_samples,
            stderr=self.stderr(),
            v_full=self.v_full,
            v_empty=self.v_empty,
            n_orderings=self.n_orderings,
            n_evaluations=self.n_evaluations,
            method="antithetic" if self.antithetic else "permutation",
        )


def sample_shapley(
    value_fn: ValueFunction,
    n_players: int,
    n_orderings: int,
    *,
    antithetic: bool = True,
    seed: int = 0,
    batch_size: int = 4096,
    tol: float | None = None,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
) -> ShapleyEstimate:
    """Shapley values estimated from ``n_orderings`` random orderings, with standard errors.

    Costs about n_orderings * (n - 1) + 2 evaluations. See ``PermutationSampler``.
    """
    sampler = PermutationSampler(
        value_fn,
        n_players,
        antithetic=antithetic,
        seed=seed,
        batch_size=batch_size,
        device=device,
    )
    return sampler.run(n_orderings, tol=tol, progress=progress)
