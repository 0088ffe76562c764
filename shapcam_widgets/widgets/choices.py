"""Labels for the explorer's layer and class choices."""

from torch import nn

from ..cam import spatial_layers


def layer_choices(
    model: nn.Module, input_size: int, which: str | list[str] = "blocks"
) -> dict[str, tuple[int, int, int]]:
    """Spatial layers offered: name -> (C, h, w) at ``input_size``, in forward order.

    which: "blocks" (modules at most two levels deep, leaving out identities: the usual
    places to explain, 16 for Lite0), "all" (every spatial module, 261 for Lite0), or a
    list of names.
    """
    shapes = spatial_layers(model, input_size)
    if which == "all":
        return shapes
    modules = dict(model.named_modules())
    if isinstance(which, str):
        if which != "blocks":
            raise ValueError(f"layers must be 'blocks', 'all' or a list of names; got {which!r}")
        return {
            name: shape
            for name, shape in shapes.items()
            if name.count(".") <= 1 and not isinstance(modules[name], nn.Identity)
        }
    missing = [name for name in which if name not in shapes]
    if missing:
        raise ValueError(
            f"not spatial layers of the model: {', '.join(missing)}; "
            f"spatial layers: {', '.join(shapes)}"
        )
    return {name: shapes[name] for name in which}


def layer_label(name: str, shape: tuple[int, int, int]) -> str:
    c, h, w = shape
    return f"{name} · {c}x{h}x{w} ({h * w} cells)"


def class_label(names: list[str], index: int, prob: float | None = None) -> str:
    label = f"{names[index]} · #{index}"
    return label if prob is None else f"{label} · {prob:.1%}"


def search_labels(names: list[str]) -> dict[str, int]:
    """Search-box option -> class index (names repeat in ImageNet, so the index is in it)."""
    return {class_label(names, i): i for i in range(len(names))}
