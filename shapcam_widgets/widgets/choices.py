"""Labels and lookups for the explorer's choices: layers, block sizes, classes, images."""

import re

from torch import nn

from ..cam import spatial_layers
from .engine import auto_block_size, block_players, seconds_to


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


def best_match(query: str, names: list[str]) -> int | None:
    """The class whose name best matches ``query`` (case-insensitive), None if none does.

    Ranks: the whole name, then names starting with the query, then a word of the name
    starting with it, then the query anywhere in the name; ties go to the lowest index.
    "tiger" -> 292 "tiger" (not 3 "tiger shark"), "shark" -> 2 "great white shark".
    """
    query = query.strip().lower()
    if not query:
        return None
    word_start = re.compile(r"(?<!\w)" + re.escape(query))

    def rank(name: str) -> int | None:
        name = name.lower()
        if name == query:
            return 0
        if name.startswith(query):
            return 1
        if word_start.search(name):
            return 2
        return 3 if query in name else None

    ranked = [(rank(name), index) for index, name in enumerate(names)]
    found = [(r, index) for r, index in ranked if r is not None]
    return min(found)[1] if found else None


def filter_images(names: list[str], query: str, keep: str | None = None) -> list[str]:
    """The image names containing ``query`` (case-insensitive), in their order, with
    ``keep`` (the image shown) among them even when it does not match."""
    query = query.strip().lower()
    return [name for name in names if query in name.lower() or name == keep]


def image_count_text(n_matching: int, n_images: int, query: str) -> str:
    """How many images the filter leaves, e.g. "12 of 1,008 images"."""
    if not query.strip():
        return f"{n_images:,} images"
    return f"{n_matching:,} of {n_images:,} images"


#: Block sides offered besides auto (those that leave a single player are left out).
BLOCK_SIZES = (1, 2, 4, 7, 8)


def block_choices(
    cells: tuple[int, int], n_samples: int, seconds_per_evaluation: float | None = None
) -> list[tuple[str, int]]:
    """(label, block side) of the "cells/player" choices of a layer of ``cells`` (h, w);
    0 is auto, and its label names the block it resolves to. Blocks that leave a single
    player are left out (a game needs two). Each label gives the players and, once the
    time per evaluation on the layer is measured, the estimated time to ``n_samples``
    orderings, e.g. "1 x 1 (196 players, ~40 s to 64 orderings)"."""
    auto = auto_block_size(cells)
    choices = [(f"auto: {auto} x {auto} ({_players(cells, auto)})", 0)]
    for block in BLOCK_SIZES:
        players = block_players(cells, block)
        if players < 2:  # a game needs two players
            continue
        label = f"{block} x {block} ({_players(cells, block)}"
        if seconds_per_evaluation is not None:
            seconds = seconds_to(seconds_per_evaluation, players, n_samples)
            label += f", {_duration(seconds)} to {n_samples} orderings"
        choices.append((label + ")", block))
    return choices


def _players(cells: tuple[int, int], block: int) -> str:
    players = block_players(cells, block)
    return f"{players:,} player" + "s" * (players != 1)


def _duration(seconds: float) -> str:
    """A rough duration: "<1 s", "~40 s", "~12 min", "~3.5 h"."""
    if seconds < 1:
        return "<1 s"
    if seconds < 120:
        return f"~{seconds:.0f} s"
    if seconds < 7200:
        return f"~{seconds / 60:.0f} min"
    return f"~{seconds / 3600:.1f} h"
