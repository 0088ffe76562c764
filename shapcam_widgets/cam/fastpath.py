"""The structured fast path (METHOD.md section 3).

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

``find_position_wise_head`` reads the torch.fx tail of a ``SplitNetwork`` and says
whether the structure is there (and why not, when it is not).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import Graph, GraphModule, Node

from ..errors import ShapCAMError
from .game import LayerGame, callable_scores
from .layers import SplitNetwork

#: Modules that act on each entry alone (in eval mode).
ELEMENTWISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
    nn.AlphaDropout,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Softplus,
)

#: Functions (call_function / call_method targets) that act on each entry alone.
ELEMENTWISE_FUNCTIONS = {
    torch.relu,
    torch.sigmoid,
    torch.tanh,
    F.relu,
    F.relu6,
    F.silu,
    F.gelu,
    F.mish,
    F.sigmoid,
    F.tanh,
    F.hardswish,
    F.hardsigmoid,
    F.hardtanh,
    F.leaky_relu,
    F.elu,
    F.softplus,
}
ELEMENTWISE_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "contiguous"}


def _timm_elementwise() -> tuple[type[nn.Module], ...]:
    try:
        from timm.layers import activations
    except ImportError:
        return ()
    names = ("GELU", "GELUTanh", "HardMish", "HardSigmoid", "HardSwish", "Mish", "PReLU")
    names += ("QuickGELU", "Sigmoid", "Swish", "Tanh")
    return tuple(getattr(activations, name) for name in names if hasattr(activations, name))


def _is_elementwise_module(module: nn.Module) -> bool:
    return isinstance(module, ELEMENTWISE_MODULES + _timm_elementwise())


def _is_cellwise_module(module: nn.Module) -> bool:
    """A module whose output at a cell depends only on its input at that cell."""
    if _is_elementwise_module(module):
        return True
    if isinstance(module, nn.Conv2d):
        return (
            module.kernel_size == (1, 1)
            and module.stride == (1, 1)
            and module.padding in ((0, 0), "valid")
        )
    if isinstance(module, nn.BatchNorm2d):
        if module.training or not module.track_running_stats:
            return False  # batch statistics mix the cells (and the coalitions)
        # timm's BatchNormAct2d adds a drop and an activation after the norm
        extras = [child for name, child in module.named_children() if name in ("drop", "act")]
        return len(extras) == len(list(module.children())) and all(
            _is_elementwise_module(child) for child in extras
        )
    return False


def _is_cellwise_node(node: Node, modules: dict) -> bool:
    if node.op == "call_module":
        return _is_cellwise_module(modules[node.target])
    if node.op == "call_function":
        if node.target is F.dropout:
            return node.kwargs.get("training", False) is False
        return node.target in ELEMENTWISE_FUNCTIONS
    if node.op == "call_method":
        return node.target in ELEMENTWISE_METHODS
    return False


def _is_global_average_pool(node: Node, modules: dict) -> bool:
    if node.op == "call_module":
        module = modules[node.target]
        if isinstance(module, nn.AdaptiveAvgPool2d):
            return module.output_size in (1, (1, 1), [1, 1])
        try:
            from timm.layers import SelectAdaptivePool2d
        except ImportError:
            return False
        return isinstance(module, SelectAdaptivePool2d) and module.pool_type == "avg"
    if node.op == "call_function" and node.target is F.adaptive_avg_pool2d:
        size = node.args[1] if len(node.args) > 1 else node.kwargs.get("output_size")
        return size in (1, (1, 1), [1, 1])
    if (node.op == "call_method" and node.target == "mean") or (
        node.op == "call_function" and node.target is torch.mean
    ):
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        return isinstance(dims, (tuple, list)) and sorted(d % 4 for d in dims) == [2, 3]
    return False


def _is_flatten_or_noop(node: Node, modules: dict) -> bool:
    """Reshapes of a pooled (B, C, 1, 1) tensor to (B, C), and no-ops (eval dropout)."""
    if node.op == "call_module":
        module = modules[node.target]
        if isinstance(module, nn.Flatten):
            return module.start_dim == 1
        return isinstance(module, (nn.Identity, nn.Dropout))
    if node.op == "call_function":
        if node.target is torch.flatten:
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            return start == 1
        if node.target is F.dropout:
            return node.kwargs.get("training", False) is False
        return False
    if node.op == "call_method" and node.target == "flatten":
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        return start == 1
    return False


@dataclass(frozen=True)
class PositionWiseHead:
    """The tail of a network as cell-wise part g, global average pool, linear classifier.

    cellwise: maps activations (B, C, h, w) to g (B, C', h, w).
    classifier: the final ``nn.Linear`` (weight K x C').
    nodes: names of the tail's graph nodes, in order (for messages).
    """

    cellwise: GraphModule
    classifier: nn.Linear
    nodes: tuple[str, ...]


def _next_in_chain(node: Node) -> tuple[Node | None, str]:
    """(the only user of ``node``, "") or (None, why the tail is not a chain there)."""
    users = list(node.users)
    if len(users) != 1:
        return None, f"{node.name!r} feeds {len(users)} nodes: the tail is not a chain"
    user = users[0]
    if user.op != "output" and len(user.all_input_nodes) != 1:
        return None, f"{user.name!r} combines several tensors"
    return user, ""


def find_position_wise_head(network: SplitNetwork) -> tuple[PositionWiseHead | None, str]:
    """(head, "") when the tail is cell-wise + global average pool + linear, else (None, why)."""
    tail = getattr(network, "_tail", None)
    if network.path != "fx" or tail is None:
        return None, "the network did not trace with torch.fx, so its tail cannot be read"
    modules = dict(tail.named_modules())
    placeholders = [node for node in tail.graph.nodes if node.op == "placeholder"]
    activation, context = placeholders[0], placeholders[1:]
    if any(node.users for node in context):
        return None, "the rest of the network reads tensors from before the layer (a skip)"

    chain: list[Node] = []
    node = activation
    while True:
        node, why = _next_in_chain(node)
        if node is None:
            return None, why
        if node.op == "output":
            return None, "the tail has no global average pool"
        chain.append(node)
        if _is_global_average_pool(node, modules):
            break
        if not _is_cellwise_node(node, modules):
            return None, f"{node.name!r} ({_describe(node, modules)}) mixes cells"
    cellwise_nodes = chain[:-1]

    linear = None
    while True:
        node, why = _next_in_chain(node)
        if node is None:
            return None, why
        if node.op == "output":
            break
        chain.append(node)
        if node.op == "call_module" and isinstance(modules[node.target], nn.Linear):
            if linear is not None:
                return None, "the classifier has more than one linear layer"
            linear = modules[node.target]
        elif not _is_flatten_or_noop(node, modules):
            return None, f"{node.name!r} ({_describe(node, modules)}) follows the pool"
    if linear is None:
        return None, "no linear classifier after the global average pool"

    graph, env = Graph(), {}
    env[activation] = graph.placeholder("activation")
    for step in cellwise_nodes:
        env[step] = graph.node_copy(step, lambda arg: env[arg])
    graph.output(env[cellwise_nodes[-1]] if cellwise_nodes else env[activation])
    cellwise = GraphModule(tail, graph)
    return PositionWiseHead(cellwise, linear, tuple(step.name for step in chain)), ""


def _describe(node: Node, modules: dict) -> str:
    if node.op == "call_module":
        return type(modules[node.target]).__name__
    return getattr(node.target, "__name__", str(node.target))


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
