"""The explorer's computations, with no widgets in them: images, predictions, games.

Everything here is cached: pictures and predictions per image; one ``ShapCAM`` (one
trace of the network) per layer; one ``Entry`` (an anytime ``Explanation`` and the maps
recorded so far) per (image, layer, block size, class, value, baseline, seed). More
orderings refine an entry's explanation; they never start it over.
"""

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from PIL import Image

from ..cam import Explanation, ShapCAM, ShapCAMResult
from ..cam.layers import eval_mode
from ..errors import ShapCAMError
from ..models import Preprocess

#: Orderings walked before the first map is drawn; each later step doubles the count.
FIRST_STEP = 4

#: Longest refinement step in seconds: how long superseded work may run on.
STEP_SECONDS = 0.4

#: "auto" block size: the smallest block whose grid has at most this many players.
AUTO_MAX_PLAYERS = 64

Check = Callable[[], None]


@dataclass(frozen=True)
class Settings:
    """What the explorer shows. target None means the top-1 class; block_size 0 means auto."""

    image: str
    layer: str
    target: int | None = None
    value: str = "prob"
    baseline: str = "zero"
    seed: int = 0
    block_size: int = 0
    n_samples: int = 64

    def key(self) -> tuple:
        """The cache key of the game: every setting except the sample count."""
        return (
            self.image,
            self.layer,
            self.block_size,
            self.target,
            self.value,
            self.baseline,
            self.seed,
        )


@dataclass
class Entry:
    """One explanation and its map after each refinement step."""

    explanation: Explanation
    history: list[ShapCAMResult] = field(default_factory=list)
    per_ordering: float = 0.0

    @property
    def seconds(self) -> float:
        """Set-up and sampling time so far."""
        return self.explanation.seconds

    def result(self, n_samples: int) -> ShapCAMResult | None:
        """The recorded map with the most orderings, at most ``n_samples`` (rounded up to a
        pair when sampling is antithetic); None before the first step."""
        limit = n_samples + n_samples % 2
        fitting = [r for r in self.history if r.n_orderings <= limit]
        return fitting[-1] if fitting else None


def auto_block_size(cells: tuple[int, int], max_players: int = AUTO_MAX_PLAYERS) -> int:
    """The smallest block side that leaves at most ``max_players`` blocks."""
    h, w = cells
    block = 1
    while -(-h // block) * -(-w // block) > max_players:
        block += 1
    return block


class Engine:
    """Pictures, predictions and Shap-CAM games of one model, cached."""

    def __init__(
        self,
        model: torch.nn.Module,
        preprocess: Preprocess,
        images: dict,
        *,
        device="auto",
        max_entries: int = 32,
    ):
        self.model, self.preprocess, self.device = model, preprocess, device
        self.loaders = dict(images)
        self.max_entries = max_entries
        self._pictures: dict[str, Image.Image] = {}
        self._inputs: dict[str, torch.Tensor] = {}
        self._probs: dict[str, torch.Tensor] = {}
        self._cams: dict[str, ShapCAM] = {}
        self._entries: OrderedDict[tuple, Entry] = OrderedDict()

    def add_image(self, name: str, picture: Image.Image) -> None:
        self.loaders[name] = lambda: picture
        for cache in (self._pictures, self._inputs, self._probs):
            cache.pop(name, None)

    def picture(self, name: str) -> Image.Image:
        """The image as shown: RGB, resized to the network's input size."""
        if name not in self._pictures:
            if name not in self.loaders:
                raise ShapCAMError(f"unknown image {name!r}")
            size = self.preprocess.size
            self._pictures[name] = self.loaders[name]().convert("RGB").resize((size, size))
        return self._pictures[name]

    def inputs(self, name: str) -> torch.Tensor:
        if name not in self._inputs:
            self._inputs[name] = self.preprocess(self.picture(name))
        return self._inputs[name]

    def probabilities(self, name: str) -> torch.Tensor:
        """Softmax over the classes for the intact image (K,)."""
        if name not in self._probs:
            parameter = next(self.model.parameters())
            inputs = self.inputs(name).to(parameter.device)  # made outside inference mode
            with torch.inference_mode(), eval_mode(self.model):
                logits = self.model(inputs)
            self._probs[name] = logits[0].float().softmax(0).cpu()
        return self._probs[name]

    def top_classes(self, name: str, k: int = 5) -> list[tuple[int, float]]:
        probs = self.probabilities(name)
        values, indices = probs.topk(min(k, len(probs)))
        return list(zip(indices.tolist(), values.tolist(), strict=True))

    def resolve(self, settings: Settings, cells: tuple[int, int]) -> Settings:
        """Settings with the target and the block size made explicit."""
        target = settings.target
        if target is None:
            target = int(self.probabilities(settings.image).argmax())
        block = settings.block_size or auto_block_size(cells)
        return Settings(**{**settings.__dict__, "target": target, "block_size": block})

    def cam(self, layer: str) -> ShapCAM:
        """The explainer of ``layer`` (one per layer: it serves every other setting)."""
        if layer not in self._cams:
            self._cams[layer] = ShapCAM(self.model, layer, device=self.device)
        return self._cams[layer]

    def entry(self, settings: Settings) -> Entry:
        """The cached explanation of fully resolved ``settings``."""
        key = settings.key()
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        explanation = self.cam(settings.layer).explain(
            self.inputs(settings.image),
            settings.target,
            value=settings.value,
            baseline=settings.baseline,
            block_size=settings.block_size,
            seed=settings.seed,
        )
        entry = Entry(explanation)
        self._entries[key] = entry
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return entry

    def refine(
        self,
        entry: Entry,
        n_samples: int,
        check: Check,
        progress: Callable[[int, int], None] | None = None,
    ) -> Iterator[ShapCAMResult]:
        """Walk orderings until the entry has ``n_samples``; yield the map after each step.

        Steps end at every power of two (so a smaller sample count later shows exactly the
        map of that many orderings) and last at most about STEP_SECONDS, so that
        ``check()``, called between steps, stops superseded work soon. Every step's map
        is kept in ``entry.history``.
        """
        explanation = entry.explanation
        while explanation.n_orderings < n_samples:
            check()
            done = explanation.n_orderings
            goal = min(n_samples, max(FIRST_STEP, 1 << done.bit_length()))
            if entry.per_ordering:
                goal = min(goal, done + max(2, int(STEP_SECONDS / entry.per_ordering)))

            def report(step_done, _step_total, base=done):
                if progress is not None:
                    progress(min(base + step_done, n_samples), n_samples)

            started = time.perf_counter()
            result = explanation.refine(goal - done, progress=report)
            spent = time.perf_counter() - started
            entry.per_ordering = spent / max(1, explanation.n_orderings - done)
            entry.history.append(result)
            yield result
