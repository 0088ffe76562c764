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

When the middle part is affine (convolutions only, as there), adding a player adds a fixed
change to its output on the footprint, computed once per player with the network's own
modules (so the borders are padded as the network pads them); otherwise the middle part
runs on the whole map at every step. Each step then costs the last part on the footprint
instead of the whole tail on every cell: about 6x fewer multiply-adds at ``blocks.5``.

The last part's output at a cell depends only on which players around it are present
(its pattern: 2^9 at most for a cell inside a 3 x 3 neighbourhood, 14,144 (cell, pattern)
pairs in all at ``blocks.5``), so a table keeps each one computed; a pattern met again is
looked up. The more orderings, the more lookups: of the cells a map's steps change at
``blocks.5``, 63 % run the last part at 16 orderings, 36 % at 64, 14 % at 256. The table
is left out where it could exceed ``_PatternTable.MAX_BYTES`` (large neighbourhoods).

Same orderings and estimates as the general path, to float rounding: ``LocalLayerGame`` is
a value function whose ``walk(orders)`` the sampler uses.
"""

from contextlib import contextmanager

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
            # the first part's output per cell, as contiguous rows (h w, C1): present and
            # absent (maps made of such rows are channels last, where depthwise
            # convolutions run about 10x faster on the CPU than on channels-first maps)
            self.present = _rows(tail.first(game.activation))[0].contiguous()
            self.absent = _rows(tail.first(game.baseline))[0].contiguous()
            middle = tail.middle(_image(self.absent[None], (h, w)))
            if tuple(middle.shape[2:]) != (h, w):
                raise ShapCAMError(
                    f"the local part changed the map's size to {tuple(middle.shape[2:])}"
                )
            self.empty_features = _rows(tail.last(middle))[0]  # (h w, C3)
            self.empty_middle = _rows(middle)[0]  # (h w, Cm)
        self.cells_of, self.cell_counts = _padded(
            [torch.nonzero(game.player_of_cell == p).flatten().cpu() for p in range(self.n_players)]
        )
        footprints = [_footprint(cells, (h, w), tail.radius) for cells in self._player_cells()]
        self.footprint_of, self.footprint_counts = _padded(footprints)
        #: (n, F, Cm): what adding each player adds to the middle's output on its
        #: footprint (padding slots unused); None when the middle is not affine
        self.middle_change = self._middle_changes() if tail.affine_middle else None
        self.table = _PatternTable.build(footprints, h * w, self.footprint_of, self.empty_features)

    @torch.inference_mode()
    def _middle_changes(self, chunk: int = 64) -> torch.Tensor:
        device = self.present.device
        cells_of, counts = self.cells_of.to(device), self.cell_counts.to(device)
        footprint_of = self.footprint_of.to(device)
        changes = []
        for first in range(0, self.n_players, chunk):
            players = torch.arange(first, min(first + chunk, self.n_players), device=device)
            rows = torch.arange(len(players), device=device)[:, None]
            cells = cells_of[players]
            maps = self.absent.expand(len(players), -1, -1).clone()
            own = torch.arange(cells.shape[1], device=device)[None, :] < counts[players][:, None]
            maps[rows, cells] = torch.where(own[..., None], self.present[cells], maps[rows, cells])
            middle = _rows(self.tail.middle(_image(maps, self.game.cells)))
            changes.append(
                middle[rows, footprint_of[players]] - self.empty_middle[footprint_of[players]]
            )
        return torch.cat(changes)

    def _player_cells(self):
        for player in range(self.n_players):
            yield self.cells_of[player, : self.cell_counts[player]]

    def __call__(self, coalitions: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.game(chunk) for chunk in coalitions.split(self.general_batch_size)])

    @torch.inference_mode()
    def walk(self, orders: torch.Tensor) -> torch.Tensor:
        """(K, n - 1) values of each ordering's coalitions after its first 1 .. n-1 players.

        Cells are rows (channels last), so that setting a cell and gathering the footprint
        move contiguous vectors, and the last part runs on all footprints at once as one
        (1, C, V, 1) map of their V cells (at most K F; a footprint at the border is smaller).
        V changes from step to step, so cuDNN picks its algorithms by heuristics here, not
        by benchmarking every new V (``torch.backends.cudnn.benchmark`` is off in a walk).
        """
        with _cudnn_heuristics():
            return self._walk(orders)

    def _walk(self, orders: torch.Tensor) -> torch.Tensor:
        device = self.present.device
        orders = orders.to(device)
        n_orders, n = orders.shape
        size = self.game.cells
        cells = size[0] * size[1]
        affine = self.middle_change is not None
        if affine:
            middle = self.empty_middle.repeat(n_orders, 1)  # (K h w, Cm)
            middle_change = self.middle_change.to(device).flatten(0, 1)  # (n F, Cm)
        else:
            state = self.absent.expand(n_orders, -1, -1).clone()  # (K, h w, C1)
        table = self.table
        if table is None:
            features = self.empty_features.repeat(n_orders, 1)  # (K h w, C3)
        else:
            keys = table.empty_keys.repeat(n_orders)  # (K h w,): each cell's pattern
            bit_of = table.bit_of.to(device)
        pooled = self.empty_features.double().sum(dim=0).repeat(n_orders, 1)  # (K, C3)
        cells_of, footprint_of = self.cells_of.to(device), self.footprint_of.to(device)
        footprint_counts = self.footprint_counts.to(device)
        slots = torch.arange(footprint_of.shape[1], device=device)
        first_cell = (torch.arange(n_orders, device=device) * cells)[:, None]
        values = torch.empty(n_orders, n - 1, dtype=torch.float64)
        for step in range(n - 1):
            players = orders[:, step]
            # the footprint's cells as rows of the (K h w) tables; padding slots dropped:
            # ``kept`` are the V slots in use of the K x F footprints, flattened
            valid = slots[None, :] < footprint_counts[players][:, None]  # (K, F)
            kept = valid.flatten().nonzero().squeeze(1)  # (V,)
            footprint = (first_cell + footprint_of[players]).flatten().index_select(0, kept)
            slot_rows = (players[:, None] * len(slots) + slots).flatten().index_select(0, kept)
            if affine:
                middle.index_add_(0, footprint, middle_change.index_select(0, slot_rows))
            else:
                player_cells = cells_of[players]  # (K, P): padding repeats a cell
                state[torch.arange(n_orders, device=device)[:, None], player_cells] = self.present[
                    player_cells
                ]

            def last(positions, footprint=footprint):
                """The last part on the middle's output at footprint[positions]: (N, C3)."""
                rows = footprint.index_select(0, positions)
                if affine:
                    near = middle.index_select(0, rows)  # (N, Cm)
                else:
                    near = _rows(self.tail.middle(_image(state, size))).flatten(0, 1)[rows]
                return _rows(self.tail.last(_column(near)))[0]

            if table is None:
                new = last(torch.arange(len(footprint), device=device))  # (V, C3)
                old = features.index_select(0, footprint)
                features.index_copy_(0, footprint, new)
            else:
                old_keys = keys.index_select(0, footprint)
                new_keys = old_keys + bit_of.flatten().index_select(0, slot_rows)
                keys.index_copy_(0, footprint, new_keys)
                # the keys before this step were all met: at the start, or at an earlier step
                new, old = table.lookup(new_keys, last), table.known(old_keys)
            change = torch.zeros(n_orders, new.shape[1], device=device, dtype=new.dtype)
            change.index_add_(0, kept // len(slots), new - old)
            pooled += change.double()
            values[:, step] = self.game.scores(self._classify(pooled / cells)).double().cpu()
        return values

    def _classify(self, pooled: torch.Tensor) -> torch.Tensor:
        """Logits (K, classes) from the pooled features (float64 sums, float32 product)."""
        return self.tail.classifier(pooled.float())

    def check(self, n_coalitions: int = 12, seed: int = 0, tol: float = 1e-4) -> float:
        """Largest |local - general| value over ``n_coalitions`` coalitions spread along one
        random ordering; raises ``ShapCAMError`` when it exceeds ``tol`` times
        max(1, |value|)."""
        generator = torch.Generator().manual_seed(seed)
        order = torch.rand(1, self.n_players, generator=generator).argsort(dim=1)
        local = self.walk(order)[0]
        steps = torch.linspace(0, self.n_players - 2, n_coalitions).round().long().unique()
        rank = torch.empty_like(order[0]).scatter_(0, order[0], torch.arange(self.n_players))
        masks = rank[None, :] < (steps + 1)[:, None]
        general = self(masks).double().cpu()
        gap = float((local[steps] - general).abs().max())
        scale = max(1.0, float(general.abs().max()))
        if not gap <= tol * scale:
            raise ShapCAMError(
                f"the local path disagrees with the network by {gap:.3g} (scale {scale:.3g}): "
                "the tail is not local after all"
            )
        return gap


class _PatternTable:
    """The last part's output at a cell depends only on which of the players whose
    footprints hold the cell are present: its pattern, at most 2^9 of them for a cell
    inside a 3 x 3 neighbourhood. The table keeps the output of each (cell, pattern)
    computed so far, so that later steps look it up instead of running the last part.
    A (cell, pattern) is the key offset[cell] + sum of 2^j over the j-th such player
    present; rows are written as patterns are first met."""

    #: the most bytes the table may come to when every pattern has been met
    MAX_BYTES = 256 * 2**20

    def __init__(self, bit_of, empty_keys, n_keys, empty_features):
        self.bit_of, self.empty_keys = bit_of, empty_keys
        device = empty_features.device
        self.row_of = torch.full((n_keys,), -1, dtype=torch.long, device=device)
        self.row_of[empty_keys] = torch.arange(len(empty_keys), device=device)
        # room for every pattern; memory pages are only taken as rows are written
        self.rows = empty_features.new_empty(n_keys, empty_features.shape[1])
        self.rows[: len(empty_keys)] = empty_features
        self.n_rows = len(empty_keys)

    @classmethod
    def build(cls, footprints, cells, footprint_of, empty_features) -> "_PatternTable | None":
        """The table for the players' ``footprints`` (lists of cells; padded as
        ``footprint_of``) on a map of ``cells`` cells, or None when it could hold more than
        ``MAX_BYTES`` (large radii: a 5 x 5 neighbourhood has 2^25 patterns per cell)."""
        footprints = [footprint.tolist() for footprint in footprints]
        holders = [[] for _ in range(cells)]  # per cell, the players whose footprint holds it
        for player, footprint in enumerate(footprints):
            for cell in footprint:
                holders[cell].append(player)
        sizes = [2 ** len(players) for players in holders]
        if sum(sizes) * empty_features.shape[1] * 4 > cls.MAX_BYTES:
            return None
        bit_of = torch.zeros_like(footprint_of)  # (n, F): padding slots add nothing
        for player, footprint in enumerate(footprints):
            for slot, cell in enumerate(footprint):
                bit_of[player, slot] = 2 ** holders[cell].index(player)
        offsets = torch.tensor([0, *sizes[:-1]]).cumsum(0).to(empty_features.device)
        return cls(bit_of, offsets, sum(sizes), empty_features)

    def lookup(self, keys: torch.Tensor, last) -> torch.Tensor:
        """(N, C3) rows of ``keys``; ``last(positions)`` computes those of keys[positions]
        not met before (once per distinct key)."""
        missing = (self.row_of.index_select(0, keys) < 0).nonzero().squeeze(1)
        if len(missing):
            distinct, inverse = torch.unique(keys[missing], return_inverse=True)
            first = torch.full_like(distinct, len(missing)).scatter_reduce_(
                0, inverse, torch.arange(len(missing), device=keys.device), "amin"
            )
            self._add(distinct, last(missing[first]))
        return self.known(keys)

    def known(self, keys: torch.Tensor) -> torch.Tensor:
        """(N, C3) rows of ``keys``, all met before."""
        return self.rows.index_select(0, self.row_of.index_select(0, keys))

    def _add(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        added = torch.arange(self.n_rows, self.n_rows + len(keys), device=keys.device)
        self.rows.index_copy_(0, added, values)
        self.row_of[keys] = added
        self.n_rows += len(keys)


@contextmanager
def _cudnn_heuristics():
    """``torch.backends.cudnn.benchmark`` off within, restored after: with it on, cuDNN
    times its algorithms on every input shape it has not met, trying workspaces as large as
    the free GPU memory, which a walk's changing shapes make a cost at nearly every step."""
    benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = benchmark


def _rows(maps: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h w, C): one row per cell."""
    return maps.permute(0, 2, 3, 1).flatten(1, 2)


def _image(rows: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, h w, C) rows -> (B, C, h, w) maps in channels-last memory (a view when the
    rows are contiguous)."""
    return rows.unflatten(1, size).permute(0, 3, 1, 2)


def _column(rows: torch.Tensor) -> torch.Tensor:
    """(N, C) rows -> (1, C, N, 1): the cells as one column of a map, channels last, for a
    cell-wise part to run on all of them in one call."""
    return rows.T[None, :, :, None]


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
    budget = min(memory_budget, 128 * 2**20) if cpu else memory_budget
    orders = int(max(2, min(1024, budget // per_order)))
    return orders * (game.n_players - 1)
