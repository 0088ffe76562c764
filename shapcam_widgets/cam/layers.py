"""Finding a network's spatial layers and cutting the network at one of them."""

from collections.abc import Callable

import torch
from torch import nn
from torch.fx import Graph, GraphModule, Node
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from ..errors import ShapCAMError


def spatial_layers(model: nn.Module, input_size: int | tuple[int, int] = 224) -> dict:
    """Names of the modules whose output is N x C x h x w with h * w > 1, mapped to (C, h, w).

    Measured with one forward pass of a zero image of ``input_size`` pixels, in the
    order the modules run. The model's own module (name "") is left out.
    """
    height, width = (input_size, input_size) if isinstance(input_size, int) else input_size
    device = next(model.parameters()).device
    shapes: dict[str, tuple[int, int, int]] = {}
    hooks = []
    for name, module in model.named_modules():
        if name:
            hooks.append(module.register_forward_hook(_shape_recorder(name, shapes)))
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, height, width, device=device))
    finally:
        for hook in hooks:
            hook.remove()
    return shapes


def _shape_recorder(name: str, shapes: dict) -> Callable:
    def record(_module, _inputs, output):
        if (
            isinstance(output, torch.Tensor)
            and output.dim() == 4
            and output.shape[2] * output.shape[3] > 1
            and name not in shapes
        ):
            shapes[name] = tuple(output.shape[1:])

    return record


def resolve_layer(model: nn.Module, layer: str | nn.Module) -> str:
    """The ``named_modules()`` name of ``layer`` (a name or a module of ``model``)."""
    names = {module: name for name, module in model.named_modules() if name}
    if isinstance(layer, nn.Module):
        if layer not in names:
            raise ShapCAMError("the layer module given is not a submodule of the model")
        return names[layer]
    if layer not in names.values():
        raise ShapCAMError(f"unknown layer {layer!r}. {describe_layers(model)}")
    return layer


def describe_layers(model: nn.Module, input_size: int = 224) -> str:
    """A sentence listing the model's outer spatial layers (at most one dot in the name)."""
    shapes = spatial_layers(model, input_size)
    outer = {name: shape for name, shape in shapes.items() if name.count(".") <= 1}
    listed = ", ".join(f"{name} ({c}x{h}x{w})" for name, (c, h, w) in outer.items())
    hidden = len(shapes) - len(outer)
    return f"Spatial layers (C x h x w at {input_size} px): {listed}" + (
        f"; and {hidden} nested ones, see spatial_layers(model)" if hidden else ""
    )


def _tracer_kwargs() -> dict:
    """timm's list of untraceable modules and functions, so that timm models trace."""
    try:
        from timm.models._features_fx import get_notrace_functions, get_notrace_modules
    except ImportError:
        return {}
    return {
        "leaf_modules": list(get_notrace_modules()),
        "autowrap_functions": list(get_notrace_functions()),
    }


class SplitNetwork:
    """A classifier cut at one layer.

    ``prefix(x)`` runs once per image and returns the layer's activation plus whatever
    else the rest of the network reads (a skip connection, say); ``tail(activations,
    context)`` runs the rest on a batch of (masked) activations and returns logits.

    The cut is made on the torch.fx graph, so that only the modules that depend on the
    layer run per coalition (``path == "fx"``). Models that do not trace fall back to
    re-running the whole network with the layer's output replaced (``path == "hook"``):
    correct, but it repeats the prefix for every coalition.
    """

    def __init__(self, model: nn.Module, layer: str):
        self.model = model.eval()
        self.layer = layer
        self.module = dict(model.named_modules())[layer]
        try:
            self._prefix, self._tail = _cut_graph(model, layer)
            self.path = "fx"
        except ShapCAMError:
            raise
        except Exception:  # any tracing failure means: use the hook path
            self._prefix = self._tail = None
            self.path = "hook"

    def prefix(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        """(activation 1 x C x h x w, context) for one image x (1 x 3 x H x W)."""
        if self.path == "fx":
            activation, *context = self._prefix(x)
            return activation, tuple(context)
        captured = []
        hook = self.module.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            self.model(x)
        finally:
            hook.remove()
        return captured[0], (x,)

    def tail(self, activations: torch.Tensor, context: tuple) -> torch.Tensor:
        """Logits (B x K) for a batch of activations (B x C x h x w)."""
        batch = len(activations)
        if self.path == "fx":
            return self._tail(activations, *(_expand(value, batch) for value in context))
        hook = self.module.register_forward_hook(lambda _m, _i, _out: activations)
        try:
            return self.model(_expand(context[0], batch))
        finally:
            hook.remove()


def _expand(value, batch: int):
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == 1:
        return value.expand(batch, *value.shape[1:]).contiguous()
    return value


def _cut_graph(model: nn.Module, layer: str) -> tuple[GraphModule, GraphModule]:
    tracer_kwargs = _tracer_kwargs()
    _, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    traced = create_feature_extractor(
        model,
        return_nodes={layer: "activation", eval_nodes[-1]: "logits"},
        tracer_kwargs=tracer_kwargs,
    )
    nodes = [node for node in traced.graph.nodes if node.op != "output"]
    returned = next(node for node in traced.graph.nodes if node.op == "output").args[0]
    activation, logits = returned["activation"], returned["logits"]

    downstream: set[Node] = {activation}
    for node in nodes:
        if any(arg in downstream for arg in node.all_input_nodes):
            downstream.add(node)
    if logits not in downstream:
        raise ShapCAMError(f"layer {layer!r} does not feed the classifier output")
    tail_nodes = [node for node in nodes if node in downstream and node is not activation]
    tail_set = set(tail_nodes)
    context = [
        node
        for node in nodes
        if node not in downstream and any(user in tail_set for user in node.users)
    ]

    prefix_graph, env = Graph(), {}
    for node in nodes:
        if node not in downstream or node is activation:
            env[node] = prefix_graph.node_copy(node, lambda arg: env[arg])
    prefix_graph.output((env[activation], *(env[node] for node in context)))

    tail_graph, env = Graph(), {}
    env[activation] = tail_graph.placeholder("activation")
    for node in context:
        env[node] = tail_graph.placeholder(f"context_{node.name}")
    for node in tail_nodes:
        env[node] = tail_graph.node_copy(node, lambda arg: env[arg])
    tail_graph.output(env[logits])
    prefix = GraphModule(traced, prefix_graph)
    prefix.graph.eliminate_dead_code()
    prefix.recompile()
    return prefix, GraphModule(traced, tail_graph)
