"""ShapCAMExplorer: an ipywidgets app around ShapCAM, for JupyterLab, Voila and the book."""

import html
import threading
import time
import weakref

import ipywidgets
import numpy as np
import torch

from ..cam import ShapCAMResult, default_layer
from ..cam.layers import eval_mode
from ..errors import ShapCAMError
from ..models import DEFAULT_LAYER, Preprocess, imagenet_classes, load_model
from . import render
from .choices import (
    best_match,
    block_choices,
    class_label,
    filter_images,
    image_count_text,
    layer_choices,
    layer_label,
    search_labels,
)
from .comparisons import (
    BATCH_SIZE,
    FAST,
    SLOW,
    batch_seconds,
    compare,
    scorecam_passes,
    scorecam_seconds,
)
from .controls import SAMPLE_STEPS, build_controls, build_panels, layout
from .engine import ByteCache, Engine, Entry, Settings
from .images import catalogue, decode_upload
from .worker import Runner, interruptible

#: While the estimate refines, redraw the map at most this often (seconds), and the
#: standard-error and convergence panels at most every FULL_RENDER_INTERVAL seconds.
RENDER_INTERVAL = 0.6
FULL_RENDER_INTERVAL = 2.0

#: Runs expected to last longer than this (seconds) say so before they start.
LONG_RUN = 10.0

#: Search text that arrives this soon (seconds) after an Enter and extends the text
#: searched for is searched for again (see ``_on_search``).
SEARCH_LATE = 1.0

#: Cap in bytes of the comparison maps kept (Grad-CAM, Grad-CAM++, Layer-CAM, Score-CAM).
COMPARISON_BYTES = 16 * 2**20

#: ``set()`` keyword -> control name.
SETTABLE = {
    "image": "image",
    "layer": "layer",
    "block_size": "block",
    "target": "target",
    "n_samples": "samples",
    "seed": "seed",
    "value": "value",
    "baseline": "baseline",
    "display": "display",
    "opacity": "opacity",
    "compare": "compare",
    "comparison_scale": "comparison_scale",
}


class ShapCAMExplorer:
    """Interactive Shap-CAM: choose an image, layer, class and sample count; watch the map.

    model: a CNN classifier (default: EfficientNet-Lite0 with ImageNet weights).
    images: None (demo photos from scikit-image and matplotlib), a dict name -> image or
        a list of images (paths, PIL images, arrays).
    preprocess: image -> 1 x 3 x H x W tensor (default: Lite0's; ``Preprocess(224)`` for
        a model of your own).
    layer: the layer shown first (default: the last MBConv stage for Lite0, else
        ``default_layer(model)``, the last spatial layer before the global pool).
    layers: "blocks", "all" or a list of layer names to offer (see ``layer_choices``).
    class_names: one name per output (default: the ImageNet names for 1,000 outputs).
    imagenet: a folder of the ImageNet subset, None (``$SHAPCAM_IMAGENET`` or
        ``../shared/imagenet-val-subset`` when present), or False.
    n_samples: orderings at the start (a power of two, 1 to 4,096).
    background: compute in a worker thread, so the UI stays live (default). With False,
        every change computes before returning: for tests and book builds.
    device: None (the model's own device; "auto" for the default model), "auto" (CUDA
        when present), "cpu" or "cuda": the model is moved there.

    Display it as the last expression of a cell, or with ``display(explorer)``.
    ``explorer.set(...)`` changes several settings with one computation; ``wait()``
    blocks until the work in progress is done; ``close()`` frees its memory. Running
    the cell that made an explorer again closes the explorer it made before.
    """

    #: notebook cell id -> (the id of its last run, the explorers made in that run)
    _made_by_cell: dict[str, tuple[str, list[weakref.ref]]] = {}

    def __init__(
        self,
        model: torch.nn.Module | None = None,
        images=None,
        *,
        preprocess: Preprocess | None = None,
        layer: str | None = None,
        layers: str | list[str] = "blocks",
        class_names: list[str] | None = None,
        imagenet=None,
        n_samples: int = 64,
        background: bool = True,
        device: str | None = None,
    ):
        if model is None:
            model, default_preprocess = load_model("efficientnet_lite0")
            preprocess = preprocess or default_preprocess
            layer = layer or DEFAULT_LAYER
            device = device or "auto"  # the explorer's own model may move to the GPU
        preprocess = preprocess or Preprocess(224)
        if n_samples not in SAMPLE_STEPS:
            raise ShapCAMError(f"n_samples must be one of {SAMPLE_STEPS}; got {n_samples}")
        self._layers = layer_choices(model, preprocess.size, layers)
        if not self._layers:
            raise ShapCAMError("the model has no spatial layer (output N x C x h x w)")
        if layer is None:
            layer = default_layer(model, preprocess.size)
        if layer not in self._layers:
            self._layers = {**self._layers, **layer_choices(model, preprocess.size, [layer])}
        images = catalogue(images, imagenet=imagenet)
        self.engine = Engine(model, preprocess, images, device=device)
        with torch.inference_mode(), eval_mode(model):
            parameter = next(model.parameters())
            probe = torch.zeros(1, 3, preprocess.size, preprocess.size, device=parameter.device)
            n_classes = model(probe).shape[-1]
        if class_names is None:
            names = imagenet_classes()
            class_names = list(names) if n_classes == len(names) else None
        self.class_names = list(class_names or [f"class {i}" for i in range(n_classes)])
        self._search = search_labels(self.class_names)

        self.controls = build_controls(
            list(images),
            [(layer_label(name, shape), name) for name, shape in self._layers.items()],
            list(self._search),
            n_samples,
        )
        self.controls.layer.value = layer
        self.panels = build_panels()
        self.widget = layout(self.controls, self.panels)

        self._target: int | None = None
        self._scorecam_wanted: set[tuple] = set()
        self._comparisons = ByteCache(COMPARISON_BYTES)
        self._result: ShapCAMResult | None = None
        self._drawn: tuple | None = None
        self._limits: dict = {}
        self._compared: tuple | None = None  # (image content, layer, class) compared
        self._seconds_per_pass: float | None = None  # one of Score-CAM's forward passes
        self._started = time.perf_counter()  # when the job in progress began
        self._requested = n_samples  # orderings the job in progress refines to
        self._settings: Settings | None = None
        self._quiet = threading.local()
        self._blocks_lock = threading.RLock()  # the worker relabels the block choices
        self._searched: tuple[float, str] | None = None  # (when, text) of the last Enter
        self._runner = Runner(background=background, on_error=self._show_error)
        self._refresh_blocks()
        self._observe()
        self._replace_earlier()
        self._schedule()

    # ---- public -----------------------------------------------------------------------

    @property
    def result(self) -> ShapCAMResult | None:
        """The map shown now (None before the first one)."""
        return self._result

    @property
    def settings(self) -> Settings | None:
        """The settings of the map shown, with the class and block size resolved."""
        return self._settings

    @property
    def error(self) -> str | None:
        """The message of the last failed computation, None after a success."""
        error = self._runner.last_error
        return None if error is None else str(error)

    def history(self) -> list:
        """The maps recorded so far for the shown settings (one per refinement step)."""
        return list(self._entry.history) if self._settings else []

    def busy(self) -> bool:
        return self._runner.busy()

    def wait(self, timeout: float | None = 600) -> bool:
        """Block until the work in progress is done; False if ``timeout`` passed first."""
        return self._runner.wait(timeout)

    def set(self, **settings) -> "ShapCAMExplorer":
        """Change several settings at once, e.g. ``set(image="coffee", n_samples=256)``.

        Keywords: image, layer, block_size, target (class index), n_samples, seed, value,
        baseline, display ("signed" or "positive"), opacity, compare (bool),
        comparison_scale ("per map" or "shared").
        """
        unknown = set(settings) - set(SETTABLE)
        if unknown:
            raise ShapCAMError(f"unknown settings {sorted(unknown)}; valid: {', '.join(SETTABLE)}")
        with self._silenced():
            if "image" in settings:
                self._target = None
            for key, new in settings.items():
                control = getattr(self.controls, SETTABLE[key])
                if key == "target":
                    self._target = self._check_target(new)
                    self._target_options(self._target)
                if key == "image":
                    self._image_options(keep=new)
                try:
                    control.value = new
                except Exception as error:  # traitlets' TraitError: an invalid choice
                    raise ShapCAMError(
                        f"invalid {key} {new!r}; valid: {_valid_values(control)}"
                    ) from error
        self._schedule()
        return self

    def stop(self) -> None:
        """Stop the work in progress (within about a second); the map drawn stays."""
        self._runner.submit(self._stopped)

    def close(self) -> None:
        """Stop the work in progress, drop every cache and close the widgets (their
        memory in the kernel and the page is freed); the explorer is unusable after."""
        self._runner.close()
        self.engine.clear()
        self._comparisons.clear()
        self._result = self._settings = self._entry = None
        for widget in _descendants(self.widget):
            widget.close()

    def compute_scorecam(self) -> None:
        """Add Score-CAM (slow: one forward pass per channel) to the comparison panel."""
        self._on_scorecam(None)

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = repr(self)  # short and stable (nbval compares it)
        return bundle

    def __repr__(self) -> str:
        return "ShapCAMExplorer (an interactive widget: shown in JupyterLab, Voila, the book)"

    def _replace_earlier(self) -> None:
        """Close the explorers that the running notebook cell made on its earlier runs."""
        running = _running_cell()
        if running is None:
            return
        cell, run = running
        last_run, made = self._made_by_cell.get(cell, (run, []))
        if last_run != run:
            for earlier in made:
                if earlier() is not None:
                    earlier().close()
            made = []
        self._made_by_cell[cell] = (run, [*made, weakref.ref(self)])

    # ---- events -----------------------------------------------------------------------

    def _observe(self) -> None:
        # first, so that a block size that does not fit a new layer is auto when read
        for control in (self.controls.layer, self.controls.samples):
            control.observe(lambda _change: self._refresh_blocks(), names="value")
        for control in self.controls.settings_widgets():
            control.observe(self._on_change, names="value")
        self.controls.image_filter.observe(
            lambda _change: self._image_options(keep=self.controls.image.value), names="value"
        )
        self.controls.search.observe(self._on_search, names="value")
        self.controls.search.on_msg(self._on_search_enter)
        self.controls.upload.observe(self._on_upload, names="value")
        self.controls.scorecam.on_click(self._on_scorecam)
        self.controls.stop.on_click(lambda _button: self.stop())

    def _silenced(self):
        explorer = self

        class Silence:
            def __enter__(self):
                self.before = getattr(explorer._quiet, "on", False)
                explorer._quiet.on = True

            def __exit__(self, *exc):
                explorer._quiet.on = self.before

        return Silence()

    def _on_change(self, change) -> None:
        if getattr(self._quiet, "on", False):
            return
        if change["owner"] is self.controls.image:
            self._target = None
        elif change["owner"] is self.controls.target:
            self._target = change["new"]
        self._schedule()

    def _on_search(self, change) -> None:
        """Every keystroke: a whole label (picked from the list) chooses its class."""
        text = change["new"]
        if getattr(self._quiet, "on", False):
            return
        if text in self._search:
            self._choose_class(self._search[text])
        elif self._searched and time.monotonic() - self._searched[0] < SEARCH_LATE:
            # the last keystrokes before Enter, held back by the page's one-message throttle
            if len(text) > len(self._searched[1]) and text.startswith(self._searched[1]):
                self._search_for(text)

    def _on_search_enter(self, _widget, content, _buffers) -> None:
        """Enter in the search box (the page sends "submit"): the best match of the text."""
        if content.get("event") == "submit" and self.controls.search.value.strip():
            self._search_for(self.controls.search.value)

    def _search_for(self, text: str) -> None:
        """Choose the class best matching ``text`` (``best_match``), or say none does."""
        target = best_match(text, self.class_names)
        if target is None:
            self._show_error(
                ShapCAMError(
                    f"no class name contains {text.strip()!r}: type part of one of the "
                    f"{len(self.class_names):,} class names (e.g. {self.class_names[0]!r})"
                ),
                "",
            )
        else:
            self._choose_class(target)
        self._searched = (time.monotonic(), text)

    def _choose_class(self, target: int) -> None:
        self._target = target
        with self._silenced():
            self._target_options(target)
            self.controls.search.value = ""
        self._schedule()

    def _image_options(self, keep: str) -> None:
        """Offer the images whose names contain the filter's text, with ``keep`` (the
        image shown) among them, so that filtering alone never changes the map."""
        c, names = self.controls, list(self.engine.loaders)
        query = c.image_filter.value
        shown = filter_images(names, query, keep if keep in names else None)
        c.image_count.value = image_count_text(len(filter_images(names, query)), len(names), query)
        if list(c.image.options) != shown:
            with self._silenced():
                c.image.options = shown
                if keep in shown:
                    c.image.value = keep

    def _refresh_blocks(self) -> None:
        """Label the block-size choices for the layer and orderings chosen, with the time
        per evaluation measured on the layer; a block that does not fit falls back to auto."""
        c = self.controls
        with self._blocks_lock:
            _, h, w = self._layers[c.layer.value]
            rate = self.engine.layer_rate(c.layer.value)
            options = block_choices((h, w), int(c.samples.value), rate)
            if list(c.block.options) == options:
                return
            chosen = c.block.value
            with self._silenced():
                c.block.options = options  # selects the first choice, auto
                if chosen in dict(options).values():
                    c.block.value = chosen

    def _block_size(self) -> int:
        """The block size chosen (0: auto), never read while the choices are relabelled."""
        with self._blocks_lock:
            return int(self.controls.block.value)

    def _on_upload(self, change) -> None:
        if getattr(self._quiet, "on", False) or not change["new"]:
            return
        try:
            for upload in change["new"]:
                name = f"upload: {upload['name']}"
                self.engine.add_image(name, decode_upload(upload["content"], upload["name"]))
                self._image_options(keep=name)
        except ShapCAMError as error:
            self._show_error(error, "")
            return
        finally:
            with self._silenced():
                self.controls.upload.value = ()  # the button counts (0) files again
        with self._silenced():
            self.controls.image.value = name
        self._target = None
        self._schedule()

    def _on_scorecam(self, _button) -> None:
        with self._silenced():
            self.controls.compare.value = True
        self._scorecam_wanted.add(("pending",))
        self._schedule()

    def _check_target(self, target) -> int:
        if not isinstance(target, int) or not 0 <= target < len(self.class_names):
            raise ShapCAMError(
                f"class must be an index from 0 to {len(self.class_names) - 1}; got {target!r}"
            )
        return target

    def _target_options(self, target: int | None, image: str | None = None) -> None:
        """Top-5 of the image, plus ``target`` if it is not among them (call silenced)."""
        image = image or self.controls.image.value
        top = self.engine.top_classes(image)
        options = [(class_label(self.class_names, i, p), i) for i, p in top]
        if target is not None and target not in dict(top):
            prob = float(self.engine.probabilities(image)[target])
            options.append((class_label(self.class_names, target, prob), target))
        if list(self.controls.target.options) != options:
            self.controls.target.options = options
        self.controls.target.value = target if target is not None else top[0][0]

    # ---- work -------------------------------------------------------------------------

    def _read(self) -> tuple[Settings, dict]:
        c = self.controls
        settings = Settings(
            image=c.image.value,
            layer=c.layer.value,
            target=self._target,
            value=c.value.value,
            baseline=c.baseline.value,
            seed=int(c.seed.value),
            block_size=self._block_size(),
            n_samples=int(c.samples.value),
        )
        view = {
            "signed": c.display.value == "signed",
            "alpha": float(c.opacity.value),
            "fixed": c.scale.value == "fixed",
            "compare": bool(c.compare.value),
            "shared": c.comparison_scale.value == "shared",
        }
        return settings, view

    def _schedule(self) -> None:
        settings, view = self._read()
        if ("pending",) in self._scorecam_wanted:
            self._scorecam_wanted.discard(("pending",))
            view["scorecam"] = True
        self._runner.submit(lambda check: self._job(settings, view, check))

    def _job(self, settings: Settings, view: dict, check) -> None:
        with interruptible(self.engine.model, check):
            self._work(settings, view, check)

    def _work(self, settings: Settings, view: dict, check) -> None:
        self._hide_error()
        self._started = time.perf_counter()
        self._requested = settings.n_samples
        engine = self.engine
        self._status("preparing")
        picture = engine.picture(settings.image)
        _, h, wd = self._layers[settings.layer]
        resolved = engine.resolve(settings, (h, wd))
        with self._silenced():
            self._target_options(resolved.target, settings.image)
        check()
        compared = (engine.digest(settings.image), resolved.layer, resolved.target)
        self._scorecam_label(resolved.layer)
        if view["compare"] and compared != self._compared:
            self.panels.comparison.value = render.placeholder_png(
                "comparison: waiting for the Shap-CAM map", size=render.COMPARISON_SIZE
            )
            self._show_comparison_row(True)
            self._compared = None
        n = settings.n_samples
        cached = engine.cached(resolved)
        shown = None if cached is None else cached.result(n)
        if shown is None:
            self._show_waiting(picture)
        entry = engine.entry(resolved)
        check()
        self._settings, self._entry = resolved, entry
        self.panels.progress.max = n
        self.panels.progress.value = min(entry.explanation.n_orderings, n)
        if shown is not None:
            self._show(picture, entry, shown, view, "refining")
        else:
            self._status(_estimate_text(engine, entry, n))
        last = last_full = time.perf_counter()
        for _ in engine.refine(entry, n, check, self._progress):
            now = time.perf_counter()
            if entry.explanation.n_orderings >= n:
                break  # drawn in full below
            if shown is None or now - last >= RENDER_INTERVAL:
                full = shown is None or now - last_full >= FULL_RENDER_INTERVAL
                shown = entry.result(n)
                self._show(picture, entry, shown, view, "refining", full=full)
                last, last_full = now, (now if full else last_full)
        self._show(picture, entry, entry.result(n), view, "done")
        self.panels.progress.value = n
        self._refresh_blocks()  # the estimates, from the time per evaluation measured
        self._compare(picture, resolved, view, check)

    def _progress(self, done: int, total: int) -> None:
        self.panels.progress.value = min(done, total)

    def _show(
        self, picture, entry: Entry, result: ShapCAMResult, view: dict, state: str, full=True
    ):
        """Draw ``result`` (unless that exact picture is already shown) and the status.

        full: also redraw the standard-error and convergence panels (the slower ones).
        """
        name = self.class_names[result.target]
        drawn = (
            self.engine.key(self._settings),
            id(entry),
            result.n_orderings,
            view["signed"],
            view["alpha"],
            view["fixed"],
        )
        if drawn != self._drawn:
            prob = float(self.engine.probabilities(self._settings.image)[result.target])
            title = (
                f"Shap-CAM: {name} (p = {prob:.2f})\n{result.layer}, "
                f"{result.n_orderings} orderings, {result.value}, {result.baseline} baseline"
            )
            self.panels.overlay.value = render.overlay_png(
                picture,
                result,
                signed=view["signed"],
                alpha=view["alpha"],
                title=title,
                limit=self._limit(result) if view["fixed"] else None,
            )
            self.panels.efficiency.value = _efficiency_html(result)
            if full:
                self.panels.stderr.value = render.stderr_png(result)
                history = [r for r in entry.history if r.n_orderings <= result.n_orderings]
                self.panels.convergence.value = render.convergence_png(history)
            self._drawn = drawn if full else None
        self._result = result
        left = self.engine.seconds_needed(entry, self._requested) if state == "refining" else None
        self._status(
            f"{state} · {result.n_orderings} orderings · {html.escape(name)} (#{result.target})"
            f" · {result.n_evaluations} evaluations · this update "
            f"{time.perf_counter() - self._started:.2f} s ({result.path} path)"
            + (f" · about {left:.0f} s to {self._requested} orderings" if left else "")
        )

    def _limit(self, result: ShapCAMResult) -> float:
        """The fixed colour scale: the largest |phi| of every class shown so far for this
        image (by content), layer and value."""
        key = (self.engine.digest(self._settings.image), result.layer, result.value)
        largest = max(self._limits.get(key, 0.0), float(np.abs(result.phi).max()))
        self._limits[key] = largest
        return largest

    def _stopped(self, _check) -> None:
        shown = self._result
        where = f"{shown.n_orderings} orderings shown" if shown else "before the first map"
        self._status(f"stopped · {where} · change a setting to go on")

    def _show_waiting(self, picture) -> None:
        """The picture alone and blank readouts until the first map of new settings."""
        self.panels.overlay.value = render.picture_png(picture, "sampling orderings...")
        self.panels.efficiency.value = WAITING
        self.panels.stderr.value = render.placeholder_png("standard error: waiting for a map")
        self.panels.convergence.value = render.placeholder_png(
            "convergence: waiting for a map", wide=True
        )
        self._drawn = self._result = None

    def _compare(self, picture, settings: Settings, view: dict, check) -> None:
        """The comparison row: Shap-CAM beside the Grad-CAM family on the same layer and
        class; Score-CAM once asked for (its forward passes counted on the progress bar)."""
        key = (self.engine.digest(settings.image), settings.layer, settings.target)
        if view.get("scorecam"):
            self._scorecam_wanted.add(key)
        self._show_comparison_row(view["compare"])
        if not view["compare"]:
            return
        maps = {}
        for method in FAST + SLOW:
            if method in SLOW and key not in self._scorecam_wanted:
                maps[method] = self._comparisons.get((*key, method), "press the button")
                continue
            if (*key, method) not in self._comparisons:
                self._comparisons.put((*key, method), self._compute(method, settings, check))
            maps[method] = self._comparisons.get((*key, method))
        self.panels.comparison.value = render.comparison_png(
            picture,
            self._result,
            maps,
            shared=view["shared"],
            alpha=view["alpha"],
            title=f"{self.class_names[settings.target]} (#{settings.target}) \u00b7 layer "
            f"{settings.layer} \u00b7 the same class and layer in every panel",
        )
        self._compared = key
        if self._seconds_per_pass is None:
            self._status("timing one forward pass for Score-CAM's cost...")
            self._seconds_per_pass = batch_seconds(
                self.engine.model, self.engine.inputs(settings.image)
            )
            self._scorecam_label(settings.layer)
        self._show(picture, self._entry, self._result, view, "done")

    def _compute(self, method: str, settings: Settings, check) -> np.ndarray:
        """``method``'s map; for Score-CAM, each forward pass counted on the progress bar
        and in the status, and the time per pass measured for the cost on the button."""
        inputs, model = self.engine.inputs(settings.image), self.engine.model
        if method not in SLOW:
            self._status(f"computing {method}...")
            return compare(model, settings.layer, inputs, settings.target, method, check)
        passes = scorecam_passes(self._layers[settings.layer][0])
        progress = self.panels.progress
        progress.description, progress.max, progress.value = method, passes, 0

        def counted():
            check()
            progress.value += 1
            self._status(
                f"computing {method}: {progress.value} of {passes} forward passes"
                " \u00b7 stop ends it"
            )

        started = time.perf_counter()
        try:
            heat = compare(model, settings.layer, inputs, settings.target, method, counted)
        finally:
            progress.description = "sampling"
        self._seconds_per_pass = (time.perf_counter() - started) / passes
        self._scorecam_label(settings.layer)
        return heat

    def _scorecam_label(self, layer: str) -> None:
        """The Score-CAM button with its cost on ``layer``: its forward passes times the
        time of one pass of BATCH_SIZE images, measured once by ``batch_seconds`` when the
        comparison row is first computed, then from the last Score-CAM run; before that,
        BATCH_SIZE times the time of the image's own forward pass (batches cost less per
        image, so this errs long)."""
        per_pass, how = self._seconds_per_pass, "as measured"
        if per_pass is None and self.engine.image_seconds is not None:
            per_pass, how = BATCH_SIZE * self.engine.image_seconds, "estimated from one image"
        if per_pass is None:
            return
        channels = self._layers[layer][0]
        seconds = scorecam_seconds(channels, per_pass)
        button = self.controls.scorecam
        button.description = (
            f"{SLOW[0]} (~{seconds:.0f} s)" if seconds >= 1 else f"{SLOW[0]} (<1 s)"
        )
        button.tooltip = (
            f"{scorecam_passes(channels)} forward passes ({channels} channels), "
            f"{per_pass:.2g} s each {how}"
        )

    def _show_comparison_row(self, visible: bool) -> None:
        display = None if visible else "none"
        self.panels.comparison.layout.display = display
        self.controls.comparison_scale.layout.display = display

    # ---- readouts ---------------------------------------------------------------------

    def _status(self, text: str) -> None:
        self.panels.status.value = f"<span class='shapcam-state'>{text}</span>"

    def _show_error(self, error: BaseException, trace: str) -> None:
        message = html.escape(f"{type(error).__name__}: {error}")
        details = (
            ""
            if isinstance(error, ShapCAMError) or not trace
            else f"<details><summary>traceback</summary><pre>{html.escape(trace)}</pre></details>"
        )
        self.panels.error.value = (
            "<div class='shapcam-error' style='border:1px solid #c62828;background:#ffebee;"
            f"color:#b71c1c;padding:6px;white-space:pre-wrap'>{message}{details}</div>"
        )
        self.panels.error.layout.display = None
        self._status("error: see the red box above the map")

    def _hide_error(self) -> None:
        if self.panels.error.layout.display != "none":
            self.panels.error.layout.display = "none"
            self.panels.error.value = ""


def _running_cell() -> tuple[str, str] | None:
    """(the id of the notebook cell running now, the id of this run of it), or None
    where the front end sends no cell id (JupyterLab and Notebook 7 send it)."""
    from IPython import get_ipython

    kernel = getattr(get_ipython(), "kernel", None)
    if kernel is None:
        return None
    request = kernel.get_parent()
    cell = request.get("metadata", {}).get("cellId")
    return None if cell is None else (cell, request["header"]["msg_id"])


def _valid_values(control: ipywidgets.Widget) -> str:
    """What ``control`` accepts: its choices (the values of (label, value) pairs), or the
    type of its value (numbers outside a slider's range are clipped, not refused)."""
    options = getattr(control, "options", None)
    if options is not None:
        values = [o[1] if isinstance(o, tuple) else o for o in options]
        return ", ".join(map(repr, values))
    return "True or False" if isinstance(control.value, bool) else type(control.value).__name__


def _descendants(widget: ipywidgets.Widget) -> list[ipywidgets.Widget]:
    """``widget``, the widgets inside it, and their layouts and styles."""
    found = [widget]
    for name in ("layout", "style"):
        if isinstance(getattr(widget, name, None), ipywidgets.Widget):
            found.append(getattr(widget, name))
    for child in getattr(widget, "children", ()):
        found.extend(_descendants(child))
    return found


def _estimate_text(engine: Engine, entry: Entry, n_samples: int) -> str:
    """The status before a game's first map: how long it and the whole run will take."""
    total = engine.seconds_needed(entry, n_samples)
    if total is None:
        return "sampling the first orderings (time not measured yet on this layer)"
    first = engine.seconds_needed(entry, 1)
    text = f"sampling · first map in about {first:.1f} s"
    if total > LONG_RUN:
        text += f" · {n_samples} orderings in about {total:.0f} s (stop ends it)"
    return text


WAITING = "<div class='shapcam-efficiency-readout'>efficiency: waiting for a map</div>"


#: value -> the word for its units in the efficiency sentence
UNITS = {"prob": "probability"}


def _bracketed(x: float, digits: int) -> str:
    """``x`` with ``digits`` decimals, in brackets when negative (no "- -")."""
    text = f"{x:.{digits}f}"
    return text if x >= 0 else f"({text})"


def _efficiency_html(result: ShapCAMResult) -> str:
    """A plain sentence (the players share v(all) - v(none)); the formula with its
    rounding gap folded under it."""
    total = float(result.phi.sum())
    difference = result.v_full - result.v_empty
    gap = total - difference
    holds = abs(gap) <= 1e-9 * max(1.0, abs(difference))
    b = result.block_size
    players = f"{result.phi.size} " + (f"blocks of {b} x {b} cells" if b > 1 else "cells")
    return (
        f"<div class='shapcam-efficiency-readout'>The {players} share {total:.3f} "
        f"= v(all cells) {result.v_full:.3f} \u2212 v(no cells) "
        f"{_bracketed(result.v_empty, 3)} ({UNITS.get(result.value, result.value)})."
        f"<details><summary>formula</summary>efficiency {'holds' if holds else 'VIOLATED'}: "
        f"sum of phi = {total:.6f}; v(full) - v(empty) = {result.v_full:.6f} - "
        f"{_bracketed(result.v_empty, 6)} = {difference:.6f} (gap {gap:.1e})</details></div>"
    )
