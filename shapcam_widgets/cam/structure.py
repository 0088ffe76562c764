"""Reading the network after the layer from its torch.fx graph: which structure it has.

- ``find_position_wise_head``: cell-wise (1x1 convolutions, batch norms, element-wise
  activations) up to a global average pool and one linear classifier: the fast path.
- ``find_local_tail``: a cell-wise part, then a part whose output at a cell depends only
  on the cells within a small radius (stride-1 convolutions, e.g. a 3x3 depthwise one),
  then a cell-wise part, up to the same pool and classifier: the local path.

Each returns (structure, "") or (None, why not), the reason naming the graph node that
breaks the structure.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import Graph, GraphModule, Node

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


@dataclass(frozen=True)
class _Tail:
    """The tail read as a chain: the nodes before the global average pool, the linear
    classifier after it, and every node's name (for messages)."""

    graph_module: GraphModule
    activation: Node
    before_pool: list[Node]
    classifier: nn.Linear
    nodes: tuple[str, ...]


def _read_tail(network: SplitNetwork) -> tuple[_Tail | None, str]:
    """(the tail as a chain up to a global average pool and one linear layer, "") or
    (None, why not)."""
    tail = network.tail_module
    if tail is None:
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
    before_pool = chain[:-1]

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
    names = tuple(step.name for step in chain)
    return _Tail(tail, activation, before_pool, linear, names), ""


def _graph_module(tail: GraphModule, start: Node, nodes: list[Node]) -> GraphModule:
    """The chain ``nodes`` (which starts from ``start``'s output) as a one-input module."""
    graph, env = Graph(), {}
    env[start] = graph.placeholder("x")
    for step in nodes:
        env[step] = graph.node_copy(step, lambda arg: env[arg])
    graph.output(env[nodes[-1]] if nodes else env[start])
    return GraphModule(tail, graph)


def find_position_wise_head(network: SplitNetwork) -> tuple[PositionWiseHead | None, str]:
    """(head, "") when the tail is cell-wise + global average pool + linear, else (None, why)."""
    tail, why = _read_tail(network)
    if tail is None:
        return None, why
    modules = dict(tail.graph_module.named_modules())
    for node in tail.before_pool:
        if not _is_cellwise_node(node, modules):
            return None, f"{node.name!r} ({_describe(node, modules)}) mixes cells"
    cellwise = _graph_module(tail.graph_module, tail.activation, tail.before_pool)
    return PositionWiseHead(cellwise, tail.classifier, tail.nodes), ""


@dataclass(frozen=True)
class LocalTail:
    """The tail as: ``first`` (cell-wise), ``middle`` (output at a cell depends only on the
    cells within ``radius`` of it, resolution kept), ``last`` (cell-wise), global average
    pool, ``classifier`` (one ``nn.Linear``). Each part maps (B, C, h, w) to (B, C', h, w).

    nodes: names of the tail's graph nodes, in order; middle_nodes: those of ``middle``.
    affine_middle: ``middle`` is convolutions only (no activation between them), so its
        output changes by a fixed amount when one player's cells change.
    """

    first: GraphModule
    middle: GraphModule
    last: GraphModule
    classifier: nn.Linear
    radius: int
    nodes: tuple[str, ...]
    middle_nodes: tuple[str, ...]
    affine_middle: bool


def _conv_radius(module: nn.Module) -> int | None:
    """How far (in cells) a stride-1 convolution reaches, or None when it is not one."""
    if not isinstance(module, nn.Conv2d) or module.stride != (1, 1):
        return None
    reach = 0
    for size, dilation, padding in zip(
        module.kernel_size, module.dilation, _same_padding(module), strict=True
    ):
        span = dilation * (size - 1)
        if padding is None or 2 * padding != span:
            return None  # the map would change size
        reach = max(reach, padding)
    return reach


def _same_padding(module: nn.Conv2d) -> tuple:
    """The padding per side of each dimension (timm's Conv2dSame pads like "same")."""
    if type(module).__name__ == "Conv2dSame" or module.padding == "same":
        return tuple(
            d * (k - 1) // 2 if d * (k - 1) % 2 == 0 else None
            for k, d in zip(module.kernel_size, module.dilation, strict=True)
        )
    if module.padding == "valid":
        return (0, 0)
    return tuple(module.padding)


def find_local_tail(network: SplitNetwork) -> tuple[LocalTail | None, str]:
    """(local tail, "") when the tail is cell-wise, then local (stride-1 convolutions that
    keep the map's size, and cell-wise steps), then cell-wise, up to a global average pool
    and one linear classifier; else (None, why)."""
    tail, why = _read_tail(network)
    if tail is None:
        return None, why
    modules = dict(tail.graph_module.named_modules())
    radius, spatial = 0, []
    for index, node in enumerate(tail.before_pool):
        if _is_cellwise_node(node, modules):
            continue
        reach = _conv_radius(modules[node.target]) if node.op == "call_module" else None
        if reach is None:
            return None, (
                f"{node.name!r} ({_describe(node, modules)}) is neither cell-wise nor a "
                "stride-1 convolution that keeps the map's size"
            )
        radius += reach
        spatial.append(index)
    if not spatial:
        return None, "the tail is cell-wise up to the pool: the fast path applies"
    nodes = tail.before_pool
    first, middle, last = (
        nodes[: spatial[0]],
        nodes[spatial[0] : spatial[-1] + 1],
        nodes[spatial[-1] + 1 :],
    )
    start_middle = first[-1] if first else tail.activation
    return (
        LocalTail(
            first=_graph_module(tail.graph_module, tail.activation, first),
            middle=_graph_module(tail.graph_module, start_middle, middle),
            last=_graph_module(tail.graph_module, middle[-1], last),
            classifier=tail.classifier,
            radius=radius,
            nodes=tail.nodes,
            middle_nodes=tuple(node.name for node in middle),
            affine_middle=all(
                node.op == "call_module" and isinstance(modules[node.target], nn.Conv2d)
                for node in middle
            ),
        ),
        "",
    )


def _describe(node: Node, modules: dict) -> str:
    if node.op == "call_module":
        return type(modules[node.target]).__name__
    return getattr(node.target, "__name__", str(node.target))
