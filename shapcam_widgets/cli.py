"""The ``shapcam`` command line: ``shapcam explain IMAGE``, ``shapcam evaluate``."""

import argparse
import json
import re
import signal
import sys
import time
import warnings
from pathlib import Path

from .cam import BASELINES, VALUES
from .errors import ShapCAMError
from .evaluation.cli import add_evaluate_parser, run_evaluate

USAGE_ERROR = 2
INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
N_CLASSES = 1000  # the models of ``shapcam explain`` are ImageNet classifiers
#: Runs estimated to take longer than this many seconds say so on stderr.
LONG_RUN = 60.0


def _int_in(low: int, high: int | None = None):
    """An argparse type: an integer from ``low`` to ``high`` (no upper bound when None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer; got {text!r}") from None
        if value < low or (high is not None and value > high):
            valid = f">= {low}" if high is None else f"in {low}..{high}"
            raise argparse.ArgumentTypeError(f"must be {valid}; got {value}")
        return value

    return parse


def _target(text: str) -> int | None:
    """--target: "top" (None) or a class index."""
    if text == "top":
        return None
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(
            f"must be 'top' or a class index 0..{N_CLASSES - 1}; got {text!r}"
        )
    if int(text) >= N_CLASSES:
        raise argparse.ArgumentTypeError(
            f"class {int(text)} is out of range; valid: 0..{N_CLASSES - 1}"
        )
    return int(text)


def _layer(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must be a layer name; got an empty one")
    return text


def _device(text: str) -> str:
    if text not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", text):
        raise argparse.ArgumentTypeError(
            f"unknown device {text!r}; valid: auto, cpu, cuda (or cuda:N)"
        )
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shapcam", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    explain = commands.add_parser("explain", help="explain one image with Shap-CAM")
    explain.add_argument("image", help="path of the image (any format Pillow reads)")
    explain.add_argument(
        "--out", required=True, help="where to write the overlay (.png, .jpg, .pdf, .svg, ...)"
    )
    explain.add_argument("--json", help="where to write the result as JSON")
    explain.add_argument(
        "--model",
        default="efficientnet_lite0",
        help="efficientnet_lite0 (default), efficientnet_lite1 or efficientnet_lite2",
    )
    explain.add_argument(
        "--layer", type=_layer, help="layer name (default: the last MBConv stage, blocks.6)"
    )
    explain.add_argument(
        "--target",
        type=_target,
        default="top",
        help=f"'top' (default) or a class index 0..{N_CLASSES - 1}",
    )
    explain.add_argument("--samples", type=_int_in(1), default=256, help="orderings (default 256)")
    explain.add_argument("--seed", type=_int_in(0, 2**64 - 1), default=0)
    explain.add_argument("--value", choices=VALUES, default="prob")
    explain.add_argument("--baseline", choices=BASELINES, default="zero")
    explain.add_argument(
        "--device", type=_device, default="auto", help="auto (default), cpu or cuda"
    )
    add_evaluate_parser(commands)
    return parser


def overlay_formats() -> list[str]:
    """File extensions matplotlib writes without extra software (pgf needs LaTeX)."""
    from matplotlib.backend_bases import FigureCanvasBase

    return sorted(set(FigureCanvasBase.get_supported_filetypes()) - {"pgf"})


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse, before any work, outputs that cannot be written or would replace an input."""
    formats = overlay_formats()
    extension = Path(args.out).suffix.lower().lstrip(".")
    if extension not in formats:
        raise ShapCAMError(
            f"--out {args.out!r}: {f'.{extension}' if extension else 'no extension'} is not "
            f"an image format matplotlib writes; valid: {', '.join(formats)}"
        )
    outputs = {"--out": Path(args.out)}
    if args.json is not None:
        outputs["--json"] = Path(args.json)
        if outputs["--json"].resolve() == outputs["--out"].resolve():
            raise ShapCAMError(f"--json and --out are the same file, {args.out!r}")
    image = Path(args.image).resolve()
    for flag, path in outputs.items():
        if path.resolve() == image:
            raise ShapCAMError(f"{flag} {str(path)!r} is the input image; it is not overwritten")
        if path.is_dir():
            raise ShapCAMError(f"{flag} {str(path)!r} is a folder, not a file")
        folder = path.resolve().parent
        if not folder.is_dir():
            raise ShapCAMError(f"{flag} {str(path)!r}: the folder {str(folder)!r} does not exist")


def _duration(seconds: float) -> str:
    minutes, hours = seconds / 60, seconds / 3600
    if hours >= 1:
        return f"{int(hours)} h {int(minutes) % 60} min"
    return f"{int(minutes)} min {int(seconds) % 60} s" if minutes >= 1 else f"{seconds:.0f} s"


class ProgressReport:
    """A ``progress(done, total)`` callback: a tqdm bar on stderr (also off a terminal),
    and, about a second in, the estimated time of a run longer than ``LONG_RUN``.

    While it is open, Ctrl-C (SIGINT, even one the shell set to be ignored) asks the run
    to stop: KeyboardInterrupt is raised at the next report, between batches of orderings
    (never inside torch or tqdm), or by ``check_interrupted`` after the run; a second
    Ctrl-C raises it at once. ``close`` restores the previous handler.
    """

    def __init__(self, total: int, *, clock=time.perf_counter):
        from tqdm import tqdm

        self.clock, self.started, self.estimated = clock, clock(), False
        self.stream = sys.stderr
        interval = 0.5 if self.stream.isatty() else 10.0
        self.bar = tqdm(total=total, unit="ordering", file=self.stream, mininterval=interval)
        self.interrupted = False
        self._previous_handler = signal.signal(signal.SIGINT, self._interrupt)

    def _interrupt(self, signum, frame) -> None:
        if self.interrupted:
            raise KeyboardInterrupt
        self.interrupted = True

    def check_interrupted(self) -> None:
        if self.interrupted:
            raise KeyboardInterrupt

    def __call__(self, done: int, total: int) -> None:
        self.check_interrupted()
        self.bar.total = total
        self.bar.update(done - self.bar.n)
        elapsed = self.clock() - self.started
        if self.estimated or elapsed < 1.0 or done >= total:
            return
        self.estimated = True
        estimate = elapsed * total / done
        if estimate > LONG_RUN:
            self.bar.write(
                f"shapcam: estimated time {_duration(estimate)} for {total:,} orderings "
                f"({done:,} took {elapsed:.1f} s); Ctrl-C stops",
                file=self.stream,
            )

    def close(self) -> None:
        signal.signal(signal.SIGINT, self._previous_handler)
        self.bar.close()


def explain(args: argparse.Namespace) -> dict:
    """Run Shap-CAM as the arguments say; write the overlay (and JSON); return the record."""
    check_outputs(args)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .cam import ShapCAM
    from .evaluation.summary import environment
    from .models import DEFAULT_LAYER, imagenet_classes, load_image, load_model

    picture = load_image(args.image)
    model, preprocess = load_model(args.model)
    explainer = ShapCAM(model, args.layer or DEFAULT_LAYER, device=args.device)
    started = time.perf_counter()
    progress = ProgressReport(args.samples)
    try:
        result = explainer.attribute(
            preprocess(picture),
            args.target,
            value=args.value,
            baseline=args.baseline,
            n_samples=args.samples,
            seed=args.seed,
            progress=progress,
        )
        progress.check_interrupted()
    finally:
        progress.close()
    seconds = time.perf_counter() - started
    name = imagenet_classes()[result.target]
    figure, ax = plt.subplots(figsize=(5, 5))
    colours = result.overlay(picture, ax)
    figure.colorbar(colours, ax=ax, fraction=0.046, label=f"phi ({args.value})")
    ax.set_title(f"Shap-CAM: {name} ({result.v_full:.3g})")
    figure.savefig(args.out, bbox_inches="tight", dpi=120)
    plt.close(figure)
    record = {
        "model": args.model,
        "layer": result.layer,
        "target": result.target,
        "target_name": name,
        "samples": result.n_orderings,
        "seed": result.seed,
        "value": result.value,
        "baseline": result.baseline,
        "phi": result.phi.tolist(),
        "stderr": result.to_dict()["stderr"],
        "v_full": result.v_full,
        "v_empty": result.v_empty,
        "method": result.method,
        "path": result.path,
        "evaluations": result.n_evaluations,
        "seconds": seconds,
        "environment": environment(explainer.device),
    }
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(record, handle, indent=1)
    return record


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"shapcam: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "evaluate":
            return run_evaluate(args)
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            record = explain(args)
    except ShapCAMError as error:
        print(f"shapcam: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print("shapcam: interrupted", file=sys.stderr)
        return INTERRUPTED
    print(
        f"{record['target_name']} (class {record['target']}): v_full = {record['v_full']:.4f}, "
        f"{record['samples']} orderings in {record['seconds']:.2f} s -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
