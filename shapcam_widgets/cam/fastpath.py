"""The structured fast path (the book's Method notes, "The fast path and the local path").

When everything after the chosen layer acts cell by cell (1x1 convolutions, batch norms,
element-wise activations) up to a global average pool and a linear classifier, every
cell adds a fixed vector to the logits:

    logits(S) = b + sum_{i in S} L_i + sum_{i not in S} L0_i,
    L_i = W g(a_i) / n,  L0_i = W g(baseline_i) / n,

where g is the cell-wise part and n the number of cells. ``FastLayerGame`` computes the
per-player differences D_i = L_i - L0_i once and then values any batch of coalitions
with one small matrix product; only the softmax is non-linear. It is a value function
like ``LayerGame``, so it plugs into ``PermutationSampler`` and ``exact_shapley``
unchanged: same seeds, same orderings, same estimates as the general path (to float
rounding).

``structure.find_position_wise_head`` reads the network's tail and says whether the
structure is there (and why not, when it is not).
"""

import torch

from ..errors import ShapCAMError
from .game import LayerGame, callable_scores
from .structure import PositionWiseHead

#: classes whose logit stays below the target's by more than this in every coalition are
#: dropped from the softmax: each adds less than exp(-40) ~ 4e-18 to a denominator >= 1.
PRUNE_MARGIN = 40.0


class FastLayerGame:
    """The value function of ``game`` computed from per-player logit contributions.

    logits(S) = base + sum_{i in S} D_i with base = b + sum_i L0_i, D_i = sum over the
    player's cells of L_c - L0_c, all in float64. Values are float64 on the CPU; a
    callable target (``game.objective``) is applied to these logits.
    """

    def __init__(self, game: LayerGame, head: PositionWiseHead):
        self.game = game
        self.n_players, self.target, self.value = game.n_players, game.target, game.value
        with torch.inference_mode():
            g_cells = head.cellwise(game.activation)[0]
            g_base = head.cellwise(game.baseline)[0]
            if g_cells.dim() != 3 or tuple(g_cells.shape[1:]) != tuple(game.cells):
                raise ShapCAMError(
                    f"the cell-wise part changed the map's shape to {tuple(g_cells.shape)}"
                )
            n_cells = game.cells[0] * game.cells[1]
            weight = head.classifier.weight.detach().double().cpu()
            diff = (g_cells - g_base).reshape(len(g_cells), -1).double().cpu()
            cell_gain = weight @ diff / n_cells  # (K, cells): L_c - L0_c
            base_cells = weight @ g_base.reshape(len(g_base), -1).double().cpu() / n_cells
            base = base_cells.sum(dim=1)
            if head.classifier.bias is not None:
                base = base + head.classifier.bias.detach().double().cpu()
            gains = torch.zeros(len(weight), self.n_players, dtype=torch.float64)
            gains.index_add_(1, game.player_of_cell.cpu(), cell_gain)
        #: (n_players, K): each player's logit contribution relative to the baseline
        self.gains = gains.T.contiguous()
        #: (K,): the logits of the empty coalition
        self.base = base
        #: the classes the value reads (the softmax's, pruned for "prob")
        self.classes = torch.arange(len(base))
        if game.objective is None and self.value == "prob":
            self._prune_softmax()

    def _prune_softmax(self) -> None:
        t = self.target
        # an upper bound of logit_k - logit_t over all coalitions; prune hopeless classes
        relative = self.gains - self.gains[:, t : t + 1]
        bound = (self.base - self.base[t]) + relative.clamp(min=0).sum(dim=0)
        self.classes = torch.nonzero(bound > -PRUNE_MARGIN).flatten()
        self._rel_gains = relative[:, self.classes].contiguous()
        self._rel_base = (self.base - self.base[t])[self.classes]
        # exp() of float64 overflows only above 709: below that, skip logsumexp's max pass
        self._plain_sum = float(bound.max()) < 700

    @property
    def n_classes(self) -> int:
        return len(self.base)

    def logits(self, coalitions: torch.Tensor) -> torch.Tensor:
        """(B, K) float64 logits of each coalition."""
        return self.base + coalitions.cpu().double() @ self.gains

    def __call__(self, coalitions: torch.Tensor) -> torch.Tensor:
        if coalitions.dim() != 2 or coalitions.shape[1] != self.n_players:
            raise ShapCAMError(
                f"coalitions must be a bool tensor (B, {self.n_players}); "
                f"got {tuple(coalitions.shape)}"
            )
        if self.game.objective is not None:
            return callable_scores(self.game.objective, self.logits(coalitions))
        present = coalitions.cpu().double()
        if self.value == "logit":
            return self.base[self.target] + present @ self.gains[:, self.target]
        # p_t = 1 / sum_k exp(logit_k - logit_t), over the classes that can matter
        relative = torch.addmm(self._rel_base, present, self._rel_gains)
        if self._plain_sum:
            return relative.exp_().sum(dim=1).reciprocal_()
        return torch.logsumexp(relative, dim=1).neg_().exp_()

    def check(self, n_random: int = 6, seed: int = 0, tol: float = 1e-4) -> float:
        """Largest |fast - general| logit difference on the ends and a few random coalitions.

        Raises ``ShapCAMError`` when it exceeds ``tol`` times the logits' scale.
        """
        generator = torch.Generator().manual_seed(seed)
        coalitions = torch.rand(n_random + 2, self.n_players, generator=generator) < 0.5
        coalitions[0], coalitions[1] = False, True
        game = self.game
        with torch.inference_mode():
            general = game.network.tail(game.masked_activations(coalitions), game.context)
        general = general.double().cpu()
        gap = float((self.logits(coalitions) - general).abs().max())
        scale = max(1.0, float(general.abs().max()))
        if not gap <= tol * scale:
            raise ShapCAMError(
                f"the fast path disagrees with the network by {gap:.3g} in the logits "
                f"(scale {scale:.3g}): the tail is not position-wise after all"
            )
        return gap


#: Per-call batch of coalitions for the fast path: (B, K) float64 stays cache-sized.
FAST_BATCH_BYTES = 8 * 2**20


def fast_batch_size(fast: FastLayerGame, memory_budget: int) -> int:
    """Coalitions per call of a ``FastLayerGame``."""
    per_coalition = 8 * (len(fast.classes) + fast.n_players) * 2
    return int(max(64, min(memory_budget, FAST_BATCH_BYTES) // per_coalition))
