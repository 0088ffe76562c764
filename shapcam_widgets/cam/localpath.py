"""The local path: exact locality along each ordering.

When the network after the layer is a cell-wise part, then a part whose output at a cell
depends only on the cells within a small radius r (stride-1 convolutions, such as
EfficientNet-Lite0's 3x3 depthwise one after ``blocks.5``), then a cell-wise part, up to a
global average pool and a linear classifier (``structure.find_local_tail``), then along
an ordering, where consecutive coalitions differ by one player:

- the first, cell-wise part has two states per cell, present and absent, computed once;
- adding a player changes the middle part's output only within r cells of the player's
  cells (its footprint: at most 9 cells of 49 at ``blocks.5``), so only those cells go
  through the last part, and their change is added to the running sum that the pool
  averages.

The middle part runs on the whole map (it is the cheap part: a depthwise convolution), so
the borders are handled exactly as the network pads them. Each step costs the last part
on the footprint instead of the whole tail on every cell: about 6x fewer multiply-adds
at ``blocks.5``. Same orderings and estimates as the general path, to float rounding:
``LocalLayerGame`` is a value function whose ``walk(orders)`` the sampler uses.
"""

import torch

from ..errors import ShapCAMError
from .game import LayerGame
from .structure import LocalTail


class LocalLayerGame:
    """The value function of ``game`` walked ordering by ordering on a ``LocalTail``.

    ``walk(orders)`` gives the values of the coalitions after 1 .. n-1 players of each
    ordering (K x n orders in, K x (n - 1) values out); calling it with coalitions (B, n)
    values them on the general path (for the ends of the sampler and exact enumeration).
    """

    def __init__(self, game: LayerGame, tail: LocalTail, general_batch_size: int):
        self.game, self.tail = game, tail
        self.n_players, self.target, self.value = game.n_players, game.target, game.value
        self.general_batch_size = general_batch_size
        h, w = game.cells
        with torch.inference_mode():
            self.present = tail.first(game.activation).flatten(2)  # (1, C1, h w)
            self.absent = tail.first(game.baseline).flatten(2)
            middle = tail.middle(self.absent.unflatten(2, (h, w)))
            if tuple(middle.shape[2:]) != (h, w):
                raise ShapCAMError(
                    f"the local part changed the map's size to {tuple(middle.shape[2:])}"
                )
            self.empty_features = tail.last(middle).flatten(2)  # (1, C3, h w)
        self.cells_of, self.cell_counts = _padded(
            [torch.nonzero(game.player_of_cell == p).flatten().cpu() for p in range(self.n_players)]
        )
        self.footprint_of, self.footprint_counts = _padded(
            [_footprint(cells, (h, w), tail.radius) for cells in self._player_cells()]
        )

    def _player_cells(self):
        for player in range(self.n_players):
            yield self.cells_of[player, : self.cell_counts[player]]

    def __call__(self, coalitions: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.game(chunk) for chunk in coalitions.split(self.general_batch_size)])

    @torch.inference_mode()
    def walk(self, orders: torch.Tensor) -> torch.Tensor:
        """(K, n - 1) values of each ordering's coalitions after its first 1 .. n-1 players."""
        device = self.present.device
        orders = orders.to(device)
        n_orders, n = orders.shape
        h, w = self.game.cells
        state = self.absent.expand(n_orders, -1, -1).clone()  # first part's output, (K, C1, hw)
        features = self.empty_features.expand(n_orders, -1, -1).clone()  # (K, C3, hw)
        pooled = features.double().sum(dim=2)  # (K, C3): the pool's sum over the cells
        cells_of, footprint_of = self.cells_of.to(device), self.footprint_of.to(device)
        footprint_counts = self.footprint_counts.to(device)
        slots = torch.arange(footprint_of.shape[1], device=device)
        values = torch.empty(n_orders, n - 1, dtype=torch.float64)
        for step in range(n - 1):
            players = orders[:, step]
            cells = cells_of[players]  # (K, P): padding repeats a cell, harmless here
            index = cells[:, None, :].expand(-1, state.shape[1], -1)
            state.scatter_(2, index, self.present.expand(n_orders, -1, -1).gather(2, index))
            middle = self.tail.middle(state.unflatten(2, (h, w))).flatten(2)  # (K, Cm, hw)
            footprint = footprint_of[players]  # (K, F), padded by repeating a cell
            valid = slots[None, :] < footprint_counts[players][:, None]  # (K, F)
            gathered = middle.gather(2, footprint[:, None, :].expand(-1, middle.shape[1], -1))
            width = footprint.shape[1]
            new = self.tail.last(gathered.transpose(1, 2).reshape(-1, middle.shape[1], 1, 1))
            new = new.reshape(n_orders, width, -1).transpose(1, 2)  # (K, C3, F)
            where = footprint[:, None, :].expand(-1, new.shape[1], -1)
            change = (new.double() - features.gather(2, where).double()) * valid[:, None, :]
            pooled += change.sum(dim=2)
            features.scatter_(2, where, new)
            logits = self._classify(pooled / (h * w))
            values[:, step] = self.game.scores(logits).double().cpu()
        return values

    def _classify(self, pooled: torch.Tensor) -> torch.Tensor:
        classifier = self.tail.classifier
        weight = classifier.weight.double()
        logits = pooled @ weight.T
        return logits if classifier.bias is None else logits + classifier.bias.double()

    def check(self, n_orders: int = 2, seed: int = 0, tol: float = 1e-4) -> float:
        """Largest |local - general| value along a few random orderings; raises
        ``ShapCAMError`` when it exceeds ``tol`` times max(1, |value|)."""
        generator = torch.Generator().manual_seed(seed)
        orders = torch.rand(n_orders, self.n_players, generator=generator).argsort(dim=1)
        local = self.walk(orders)
        rank = torch.empty_like(orders).scatter_(
            1, orders, torch.arange(self.n_players).expand_as(orders)
        )
        steps = torch.arange(1, self.n_players)
        masks = (rank[:, None, :] < steps[None, :, None]).reshape(-1, self.n_players)
        general = self(masks).double().cpu().reshape(n_orders, -1)
        gap = float((local - general).abs().max())
        scale = max(1.0, float(general.abs().max()))
        if not gap <= tol * scale:
            raise ShapCAMError(
                f"the local path disagrees with the network by {gap:.3g} (scale {scale:.3g}): "
                "the tail is not local after all"
            )
        return gap


def _footprint(cells: torch.Tensor, size: tuple[int, int], radius: int) -> torch.Tensor:
    """The flat indices of the cells within ``radius`` (in rows and columns) of ``cells``."""
    h, w = size
    rows, cols = cells // w, cells % w
    near = torch.zeros(h, w, dtype=torch.bool)
    for row, col in zip(rows.tolist(), cols.tolist(), strict=True):
        near[max(0, row - radius) : row + radius + 1, max(0, col - radius) : col + radius + 1] = (
            True
        )
    return torch.nonzero(near.flatten()).flatten()


def _padded(lists: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, width) long tensor of the lists, each padded by repeating its first entry; counts."""
    width = max(len(items) for items in lists)
    table = torch.stack(
        [torch.cat([items, items[:1].expand(width - len(items))]) for items in lists]
    )
    return table, torch.tensor([len(items) for items in lists])


def local_batch_size(game: LayerGame, local: LocalLayerGame, memory_budget: int, cpu: bool) -> int:
    """Coalitions per call (orderings per walk times n - 1) within the memory budget:
    each ordering holds the first part's output, the middle's and the last features."""
    cells = game.cells[0] * game.cells[1]
    channels = local.present.shape[1] * 3 + local.empty_features.shape[1] * 2
    per_order = 4 * cells * channels
    budget = min(memory_budget, 32 * 2**20) if cpu else memory_budget
    orders = int(max(2, min(1024, budget // per_order)))
    return orders * (game.n_players - 1)
