"""Finding a network's spatial layers and cutting the network at one of them."""

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.fx import Graph, GraphModule, Node
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from ..errors import ShapCAMError

#: Modules that only pool or pass a map along: never the default layer.
PASS_THROUGH = (
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._MaxPoolNd,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
    nn.Flatten,
)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); the CPU for neither."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode inside the block; restore every module's own mode after."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def spatial_layers(model: nn.Module, input_size: int | tuple[int, int] = 224) -> dict:
    """Names of the modules whose output is N x C x h x w with h * w > 1, mapped to (C, h, w).

    Measured with one forward pass (eval mode) of a zero image of ``input_size`` pixels,
    in the order their first outputs appear. The model's own module (name "") is left out.
    """
    return {name: shape for name, shape, _ in _spatial_outputs(model, input_size)}


def default_layer(model: nn.Module, input_size: int | tuple[int, int] = 224) -> str:
    """The last spatial layer before the global pool: the module whose N x C x h x w output
    (h * w > 1) is computed last in a forward pass, pools, identities, dropouts left out.

    The outermost such module: "layer4" for a torchvision ResNet, "features" for VGG,
    DenseNet, MobileNet, EfficientNet and ConvNeXt, "bn2" (the head convolution's map)
    for timm's EfficientNets.
    """
    modules = dict(model.named_modules())
    finished = [
        (order, name)
        for name, _, order in _spatial_outputs(model, input_size)
        if order >= 0 and not isinstance(modules[name], PASS_THROUGH)
    ]
    if not finished:
        raise ShapCAMError(
            "the model has no spatial layer (output N x C x h x w with h * w > 1) at "
            f"{input_size} px: name a layer"
        )
    return max(finished)[1]


def _spatial_outputs(model: nn.Module, input_size: int | tuple[int, int]) -> list:
    """(name, (C, h, w), when it last output a spatial map or -1) of each spatial module,
    in the order of their first spatial outputs."""
    height, width = (input_size, input_size) if isinstance(input_size, int) else input_size
    shapes: dict[str, tuple[int, int, int]] = {}
    finished: dict[str, int] = {}
    clock = itertools.count()

    def recorder(name: str) -> Callable:
        def record(_module, _inputs, output):
            spatial = isinstance(output, torch.Tensor) and output.dim() == 4
            if spatial and output.shape[2] * output.shape[3] > 1:
                shapes.setdefault(name, tuple(output.shape[1:]))
                finished[name] = next(clock)
            else:  # a module used again after the pool is not the last spatial layer
                finished.pop(name, None)

        return record

    hooks = [
        module.register_forward_hook(recorder(name))
        for name, module in model.named_modules()
        if name
    ]
    try:
        with torch.no_grad(), eval_mode(model):
            model(torch.zeros(1, 3, height, width, device=model_device(model)))
    finally:
        for hook in hooks:
            hook.remove()
    return [(name, shape, finished.get(name, -1)) for name, shape in shapes.items()]


def resolve_layer(model: nn.Module, layer: str | nn.Module | None) -> str:
    """The ``named_modules()`` name of ``layer``: a name, a module of ``model``, or None
    for ``default_layer(model)``."""
    if layer is None:
        return default_layer(model)
    names = {module: name for name, module in model.named_modules() if name}
    if isinstance(layer, nn.Module):
        if layer not in names:
            raise ShapCAMError("the layer module given is not a submodule of the model")
        return names[layer]
    if layer == "":
        raise ShapCAMError(
            "layer '' names the whole model, not a layer: name a spatial layer, or leave "
            f"layer=None for the last one ({default_layer(model)!r}). {describe_layers(model)}"
        )
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
        self.model = model
        self.layer = layer
        self.module = dict(model.named_modules())[layer]
        try:
            with eval_mode(model):  # the eval graph (timm bakes self.training into F.dropout)
                self._prefix, self._tail, self._per_image = _cut_graph(model, layer)
            self.path = "fx"
        except ShapCAMError:
            raise
        except Exception:  # any tracing failure means: use the hook path
            self._prefix = self._tail = None
            self._per_image = (True,)
            self.path = "hook"

    @property
    def tail_module(self) -> GraphModule | None:
        """The network after the layer as a torch.fx GraphModule, ``(activation, *context)``
        to logits; None when the model did not trace (``path == "hook"``)."""
        return self._tail

    def prefix(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        """(activations N x C x h x w, context) for N images x (N x 3 x H x W)."""
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

    def select(self, context: tuple, index: int) -> tuple:
        """The context of image ``index`` of a batch's ``prefix`` (per-image tensors sliced)."""
        return tuple(
            value[index : index + 1] if per_image else value
            for value, per_image in zip(context, self._per_image, strict=True)
        )

    def tail(self, activations: torch.Tensor, context: tuple) -> torch.Tensor:
        """Logits (B x K) for B activations (B x C x h x w), of one image or of B images."""
        batch = len(activations)
        context = tuple(
            _expand(value, batch) if per_image else value
            for value, per_image in zip(context, self._per_image, strict=True)
        )
        if self.path == "fx":
            return self._tail(activations, *context)
        hook = self.module.register_forward_hook(lambda _m, _i, _out: activations)
        try:
            return self.model(context[0])
        finally:
            hook.remove()


def _expand(value, batch: int):
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == 1:
        return value.expand(batch, *value.shape[1:]).contiguous()
    return value


def _cut_graph(model: nn.Module, layer: str) -> tuple[GraphModule, GraphModule, tuple]:
    """(prefix, tail, which context values depend on the input image)."""
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
    per_image: set[Node] = set()
    for node in nodes:
        if any(arg in downstream for arg in node.all_input_nodes):
            downstream.add(node)
        if node.op == "placeholder" or any(arg in per_image for arg in node.all_input_nodes):
            per_image.add(node)
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
    per_image_context = tuple(node in per_image for node in context)
    return prefix, GraphModule(traced, tail_graph), per_image_context
