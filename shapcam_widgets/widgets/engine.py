"""The explorer's computations, with no widgets in them: images, predictions, games.

Everything here is cached under a cap in bytes: the picture, network input and
predictions of each image content (a hash of its pixels, so that a new image under an
old name is never confused with the old one); one ``ShapCAM`` (one trace of the
network) per layer; one ``Entry`` (an anytime ``Explanation`` and the maps recorded so
far) per (image content, layer, block size, class, value, baseline, seed). More
orderings refine an entry's explanation; they never start it over.
"""

import gc
import hashlib
import time
import types
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch
from PIL import Image

from ..cam import Explanation, ShapCAM, ShapCAMResult
from ..cam.layers import eval_mode
from ..errors import ShapCAMError
from ..models import Preprocess, load_image

#: Longest refinement step in seconds: how long superseded work may run on.
STEP_SECONDS = 0.4

#: Default caps in bytes: prepared images (picture, input, predictions) and games.
IMAGE_BYTES = 64 * 2**20
ENTRY_BYTES = 128 * 2**20

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
    key: tuple  # in the engine's cache; key[1] is the layer
    history: list[ShapCAMResult] = field(default_factory=list)
    per_ordering: float = 0.0

    @cached_property
    def fixed_bytes(self) -> int:
        """Bytes of the tensors the explanation holds (its game and value function)."""
        return reachable_bytes(self.explanation)

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
    block = 1
    while block_players(cells, block) > max_players:
        block += 1
    return block


def block_players(cells: tuple[int, int], block: int) -> int:
    """Players of a game on ``cells`` (h, w) in blocks of ``block`` x ``block`` cells (the
    last row and column of blocks may be partial)."""
    h, w = cells
    return -(-h // block) * -(-w // block)


def seconds_to(seconds_per_evaluation: float, n_players: int, n_orderings: int) -> float:
    """Estimated seconds to sample ``n_orderings`` orderings (rounded up to a pair, as
    antithetic sampling does) of a game of ``n_players``: n_players - 1 evaluations each."""
    return seconds_per_evaluation * (n_orderings + n_orderings % 2) * (n_players - 1)


def shown_picture(original: Image.Image, preprocess: Preprocess) -> Image.Image:
    """The picture drawn under the maps.

    With a centre crop (``preprocess.resize`` set), the crop the network sees. Without one
    (the whole image squashed to size x size, as for EfficientNet-Lite), the whole image
    with its aspect ratio kept, shrunk bilinearly to at most 2 x size pixels on its
    longer side (never enlarged): the map stretches over it as the squash did.
    """
    if preprocess.resize is not None:
        return preprocess.picture(original)
    width, height = original.size
    scale = 2 * preprocess.size / max(width, height)
    if scale >= 1:
        return original
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return original.resize(size, Image.BILINEAR)


def nbytes(value) -> int:
    """Bytes held by the arrays, tensors and pictures in ``value`` (one level of nesting
    in lists, tuples, dicts and objects)."""
    if isinstance(value, torch.Tensor):
        return value.element_size() * value.nelement()
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, Image.Image):
        return value.width * value.height * len(value.getbands())
    if isinstance(value, (list, tuple)):
        return sum(nbytes(item) for item in value)
    if isinstance(value, dict):
        return sum(nbytes(item) for item in value.values())
    return 0


class ByteCache:
    """Least recently used values under a cap in bytes; the newest value always stays.

    size: value -> bytes, measured again at each ``trim`` (entries grow as they refine).
    """

    def __init__(self, max_bytes: int, size: Callable[[object], int] = nbytes):
        self.max_bytes, self.size = max_bytes, size
        self._items: OrderedDict = OrderedDict()

    def get(self, key, default=None):
        if key not in self._items:
            return default
        self._items.move_to_end(key)
        return self._items[key]

    def put(self, key, value) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        self.trim()

    def pop(self, key, default=None):
        return self._items.pop(key, default)

    def trim(self) -> None:
        """Drop the least recently used values until the rest fit under the cap."""
        while len(self._items) > 1 and self.nbytes() > self.max_bytes:
            self._items.popitem(last=False)

    def nbytes(self) -> int:
        return sum(self.size(value) for value in self._items.values())

    def clear(self) -> None:
        self._items.clear()

    def __contains__(self, key) -> bool:
        return key in self._items

    def __iter__(self):
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class Prepared:
    """One image content as the network sees it."""

    digest: str
    picture: Image.Image  # as shown under the maps (``shown_picture``)
    inputs: torch.Tensor  # 1 x 3 x size x size, ``preprocess`` of the original image
    probs: torch.Tensor  # softmax over the classes (K,)


def content_digest(picture: Image.Image) -> str:
    """A hash of an RGB picture's size and pixels."""
    digest = hashlib.blake2b(f"{picture.size}".encode(), digest_size=16)
    digest.update(picture.tobytes())
    return digest.hexdigest()


def reachable_bytes(root) -> int:
    """Bytes of the tensors and arrays reachable from ``root`` through containers,
    attributes and closures, each storage once; not through modules (the model is
    shared), classes or a function's globals."""
    seen, storages, total = set(), set(), 0
    stack = [root]
    while stack:
        value = stack.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, torch.Tensor):
            storage = value.untyped_storage()
            if storage.data_ptr() not in storages:
                storages.add(storage.data_ptr())
                total += storage.nbytes()
        elif isinstance(value, np.ndarray):
            total += value.nbytes
        elif isinstance(value, types.FunctionType):
            stack.extend([value.__closure__ or (), value.__defaults__ or ()])
        elif not isinstance(value, (torch.nn.Module, type, types.ModuleType, str, bytes)):
            stack.extend(gc.get_referents(value))
    return total


def entry_size(entry: "Entry") -> int:
    """Bytes of an entry's recorded maps and of the tensors its explanation holds."""
    return nbytes([(r.phi, r.stderr) for r in entry.history]) + entry.fixed_bytes


@contextmanager
def undone_on_error(explanation: Explanation):
    """On an exception, put the explanation's sampler back as it was: its sums, counts
    and random state (orderings drawn but not walked are drawn again)."""
    sampler = explanation._sampler
    saved = (
        sampler.generator.get_state(),
        sampler.n_orderings,
        sampler.n_evaluations,
        sampler._n_samples,
        sampler._sum.clone(),
        sampler._sum_sq.clone(),
    )
    try:
        yield
    except BaseException:
        state, *counts = saved
        sampler.generator.set_state(state)
        (
            sampler.n_orderings,
            sampler.n_evaluations,
            sampler._n_samples,
            sampler._sum,
            sampler._sum_sq,
        ) = counts
        raise


class Engine:
    """Pictures, predictions and Shap-CAM games of one model, cached under caps in bytes.

    image_bytes, entry_bytes: the caps of the prepared images and of the games.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        preprocess: Preprocess,
        images: dict,
        *,
        device="auto",
        image_bytes: int = IMAGE_BYTES,
        entry_bytes: int = ENTRY_BYTES,
    ):
        self.model, self.preprocess, self.device = model, preprocess, device
        self.loaders = dict(images)
        self._digests: dict[str, str] = {}
        self._prepared = ByteCache(image_bytes, lambda p: nbytes([p.picture, p.inputs, p.probs]))
        self._cams: dict[str, ShapCAM] = {}
        self._entries = ByteCache(entry_bytes, entry_size)
        self._rates: dict[tuple[str, str], float] = {}  # (layer, path) -> s per evaluation
        #: seconds of the last forward pass of one image (None before any)
        self.image_seconds: float | None = None

    def add_image(self, name: str, picture: Image.Image) -> None:
        """Add or replace the image ``name``; caches follow its content, not its name."""
        self.loaders[name] = lambda: picture
        self._digests.pop(name, None)

    def prepared(self, name: str) -> Prepared:
        """The image ``name`` prepared for the network (loaded again once evicted)."""
        cached = self._prepared.get(self._digests.get(name))
        if cached is not None:
            return cached
        if name not in self.loaders:
            raise ShapCAMError(f"unknown image {name!r}")
        original = load_image(self.loaders[name]())
        digest = content_digest(original)
        self._digests[name] = digest
        prepared = self._prepared.get(digest)
        if prepared is None:
            inputs = self.preprocess(original)
            picture = shown_picture(original, self.preprocess)
            prepared = Prepared(digest, picture, inputs, self._predict(inputs))
            self._prepared.put(digest, prepared)
        return prepared

    def digest(self, name: str) -> str:
        """The hash of the image's content: the key of every cache about it."""
        return self.prepared(name).digest

    def picture(self, name: str) -> Image.Image:
        """The image as shown under the maps: RGB, its aspect ratio kept unless the
        network sees a crop (``shown_picture``)."""
        return self.prepared(name).picture

    def inputs(self, name: str) -> torch.Tensor:
        """``preprocess`` of the image: the same tensor as ``preprocess(path)``."""
        return self.prepared(name).inputs

    def probabilities(self, name: str) -> torch.Tensor:
        """Softmax over the classes for the intact image (K,)."""
        return self.prepared(name).probs

    def _predict(self, inputs: torch.Tensor) -> torch.Tensor:
        """Softmax of the model on ``inputs``; the seconds it took go to ``image_seconds``."""
        parameter = next(self.model.parameters())
        started = time.perf_counter()
        with torch.inference_mode(), eval_mode(self.model):
            probs = self.model(inputs.to(parameter.device))[0].float().softmax(0).cpu()
        self.image_seconds = time.perf_counter() - started
        return probs

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

    def key(self, settings: Settings) -> tuple:
        """The cache key of resolved ``settings``' game: the image by its content."""
        return (self.digest(settings.image), *settings.key()[1:])

    def cached(self, settings: Settings) -> Entry | None:
        """The entry of resolved ``settings`` if it is cached."""
        return self._entries.get(self.key(settings))

    def entry(self, settings: Settings) -> Entry:
        """The cached explanation of fully resolved ``settings``."""
        key = self.key(settings)
        entry = self._entries.get(key)
        if entry is not None:
            return entry
        explanation = self.cam(settings.layer).explain(
            self.inputs(settings.image),
            settings.target,
            value=settings.value,
            baseline=settings.baseline,
            block_size=settings.block_size,
            seed=settings.seed,
        )
        entry = Entry(explanation, key)
        self._entries.put(key, entry)
        return entry

    def seconds_needed(self, entry: Entry, n_samples: int) -> float | None:
        """Estimated seconds to refine ``entry`` to ``n_samples`` orderings, from the time
        per evaluation measured so far on its layer and path (None before any)."""
        explanation = entry.explanation
        rate = self._rates.get((entry.key[1], explanation.path))
        if rate is None:
            return None
        missing = max(0, n_samples + n_samples % 2 - explanation.n_orderings)
        return seconds_to(rate, explanation._game.n_players, missing)

    def layer_rate(self, layer: str) -> float | None:
        """Seconds per evaluation measured on ``layer`` (the slowest of its paths), None
        before any."""
        rates = [rate for (name, _path), rate in self._rates.items() if name == layer]
        return max(rates, default=None)

    def clear(self) -> None:
        """Drop every cache (``ShapCAMExplorer.close``)."""
        self._digests.clear()
        self._prepared.clear()
        self._entries.clear()
        self._cams.clear()
        self._rates.clear()

    def refine(
        self,
        entry: Entry,
        n_samples: int,
        check: Check,
        progress: Callable[[int, int], None] | None = None,
    ) -> Iterator[ShapCAMResult]:
        """Walk orderings until the entry has ``n_samples``; yield the map after each step.

        Steps end at every power of two from one ordering (one pair when antithetic), so
        that any smaller sample count later shows exactly the map of that many orderings,
        and last at most about STEP_SECONDS, so that ``check()``, called between steps,
        stops superseded work soon. Every step's map is kept in ``entry.history``. A step
        that raises (``check()`` called inside it) is undone, so that the entry's later
        orderings are still those of its seed.
        """
        explanation = entry.explanation
        while explanation.n_orderings < n_samples:
            check()
            done = explanation.n_orderings
            goal = min(n_samples, 1 << done.bit_length())
            if entry.per_ordering:
                goal = min(goal, done + max(2, int(STEP_SECONDS / entry.per_ordering)))

            def report(step_done, _step_total, base=done):
                if progress is not None:
                    progress(min(base + step_done, n_samples), n_samples)

            started = time.perf_counter()
            evaluations = entry.history[-1].n_evaluations if entry.history else 2
            with undone_on_error(explanation):
                result = explanation.refine(goal - done, progress=report)
            spent = time.perf_counter() - started
            entry.per_ordering = spent / max(1, explanation.n_orderings - done)
            rate_key = (entry.key[1], explanation.path)
            self._rates[rate_key] = spent / max(1, result.n_evaluations - evaluations)
            entry.history.append(result)
            self._entries.trim()
            yield result
