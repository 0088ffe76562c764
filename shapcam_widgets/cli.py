"""The ``shapcam`` command line: ``shapcam explain IMAGE``, ``shapcam evaluate``."""

import argparse
import json
import sys
import time

from .errors import ShapCAMError
from .evaluation.cli import add_evaluate_parser, run_evaluate

USAGE_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shapcam", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    explain = commands.add_parser("explain", help="explain one image with Shap-CAM")
    explain.add_argument("image", help="path of the image (any format Pillow reads)")
    explain.add_argument("--out", required=True, help="where to write the overlay PNG")
    explain.add_argument("--json", help="where to write the result as JSON")
    explain.add_argument(
        "--model",
        default="efficientnet_lite0",
        help="efficientnet_lite0 (default), efficientnet_lite1 or efficientnet_lite2",
    )
    explain.add_argument("--layer", help="layer name (default: the last MBConv stage, blocks.6)")
    explain.add_argument("--target", default="top", help="'top' (default) or a class index")
    explain.add_argument("--samples", type=int, default=256, help="orderings (default 256)")
    explain.add_argument("--seed", type=int, default=0)
    explain.add_argument("--value", choices=["prob", "logit"], default="prob")
    explain.add_argument("--baseline", choices=["zero", "mean", "blur"], default="zero")
    explain.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    add_evaluate_parser(commands)
    return parser


def explain(args: argparse.Namespace) -> dict:
    """Run Shap-CAM as the arguments say; write the overlay (and JSON); return the record."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tqdm import tqdm

    from .cam import ShapCAM
    from .models import DEFAULT_LAYER, imagenet_classes, load_image, load_model

    if args.samples < 1:
        raise ShapCAMError(f"--samples must be >= 1; got {args.samples}")
    if args.target == "top":
        target = None
    elif args.target.lstrip("-").isdigit():
        target = int(args.target)
    else:
        raise ShapCAMError(f"--target must be 'top' or a class index; got {args.target!r}")
    picture = load_image(args.image)
    model, preprocess = load_model(args.model)
    explainer = ShapCAM(
        model,
        args.layer or DEFAULT_LAYER,
        value=args.value,
        baseline=args.baseline,
        device=args.device,
    )
    started = time.perf_counter()
    with tqdm(total=args.samples, unit="ordering", disable=not sys.stderr.isatty()) as bar:

        def progress(done: int, _total: int) -> None:
            bar.update(done - bar.n)

        result = explainer.attribute(
            preprocess(picture), target, n_samples=args.samples, seed=args.seed, progress=progress
        )
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
    }
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(record, handle, indent=1)
    return record


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "evaluate":
            return run_evaluate(args)
        record = explain(args)
    except ShapCAMError as error:
        print(f"shapcam: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    print(
        f"{record['target_name']} (class {record['target']}): v_full = {record['v_full']:.4f}, "
        f"{record['samples']} orderings in {record['seconds']:.2f} s -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
