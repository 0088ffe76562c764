"""The ``evaluate`` subcommand: ``add_evaluate_parser(subparsers)`` and ``run_evaluate(args)``.

Standalone meanwhile: ``python -m shapcam_widgets.evaluation [options]``. Several processes:
``torchrun --nproc_per_node K -m shapcam_widgets.evaluation [options]``.
"""

import argparse
import os
import shlex
import sys

from ..cam import BASELINES, VALUES
from ..models import DEFAULT_LAYER, MODELS
from .methods import METHODS

DEFAULT_METHODS = "shapcam,cam,gradcam,gradcampp,scorecam,layercam,center,random"
DEFAULT_OUT = "results/results.json"


def add_evaluate_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``evaluate`` to an argparse subparsers object; returns its parser."""
    parser = subparsers.add_parser(
        "evaluate",
        help="recognition and localization metrics on ImageNet (LOC layout)",
        description=(
            "Average Drop, Increase in Confidence, Deletion/Insertion AUC (RISE), energy-based "
            "pointing game and pointing game of each method's maps, with bootstrap 95% "
            "intervals. Per-image records go beside --out (<out>.records.jsonl); an "
            "interrupted run resumes and retries the images it could not read. One run at "
            "a time per --out. Shard over processes with torchrun."
        ),
    )
    configure_parser(parser)
    return parser


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--data",
        default=None,
        help="ImageNet LOC folder (LOC_val_solution.csv, LOC_synset_mapping.txt, val/); "
        "default $SHAPCAM_IMAGENET, else ../shared/imagenet-val-subset",
    )
    parser.add_argument("--limit", type=int, default=None, help="first N images of the CSV")
    parser.add_argument(
        "--methods",
        default=DEFAULT_METHODS,
        help=f"comma-separated, from {','.join(METHODS)} (default: all)",
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=128,
        help="Shap-CAM orderings per image (the most, with --tol)",
    )
    parser.add_argument(
        "--tol",
        type=float,
        default=None,
        help="stop Shap-CAM's sampling once every cell's standard error is below this "
        "(units of the value); --samples stays the cap",
    )
    parser.add_argument(
        "--block-size", type=int, default=1, help="Shap-CAM players: blocks of k x k cells"
    )
    parser.add_argument("--model", default="efficientnet_lite0", choices=sorted(MODELS))
    parser.add_argument("--layer", default=DEFAULT_LAYER, help=f"default {DEFAULT_LAYER}")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"summary JSON (default {DEFAULT_OUT})")
    parser.add_argument(
        "--target",
        default="label",
        choices=("label", "predicted"),
        help="explain the ground-truth class (default) or the predicted one",
    )
    parser.add_argument("--value", default="prob", choices=VALUES, help="Shap-CAM value")
    parser.add_argument("--baseline", default="zero", choices=BASELINES, help="Shap-CAM baseline")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed: Shap-CAM, random maps, bootstrap"
    )
    parser.add_argument(
        "--step", type=int, default=None, help="pixels per deletion/insertion step (default 8 rows)"
    )
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--scorecam-batch-size", type=int, default=64)
    parser.add_argument("--fresh", action="store_true", help="discard earlier records of --out")
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar on stderr (the estimated time of a long run stays)",
    )
    return parser


def run_evaluate(args: argparse.Namespace) -> int:
    """Run the evaluation described by parsed ``args``; prints the table. Returns 0, or
    130 after Ctrl-C (the records written so far stay, and the same command resumes).

    Raises ShapCAMError on bad input (unknown method, missing data folder, ...).
    """
    from ..cli import INTERRUPTED

    try:
        return _run(args)
    except KeyboardInterrupt:
        if os.environ.get("RANK", "0") == "0":
            print("shapcam: interrupted; rerun the same command to resume", file=sys.stderr)
        return INTERRUPTED


def _run(args: argparse.Namespace) -> int:
    from ..cam import choose_device
    from ..models import load_model
    from . import distributed
    from .data import ImageNetLOC
    from .methods import parse_methods
    from .records import check_output
    from .runner import EvaluationConfig, evaluate

    check_output(args.out)
    config = EvaluationConfig(
        model=args.model,
        layer=args.layer,
        methods=tuple(parse_methods(args.methods)),
        samples=args.samples,
        value=args.value,
        baseline=args.baseline,
        block_size=args.block_size,
        tol=args.tol,
        target=args.target,
        seed=args.seed,
        step=args.step,
        bootstrap=args.bootstrap,
        scorecam_batch_size=args.scorecam_batch_size,
    )
    device = choose_device(args.device)
    dataset = ImageNetLOC(args.data, limit=args.limit)
    rank, _world = distributed.init_from_env()
    try:
        model, preprocess = load_model(args.model)
        summary = evaluate(
            model,
            preprocess,
            dataset,
            config,
            args.out,
            device=device,
            fresh=args.fresh,
            progress=not args.no_progress,
            command=_command_line(),
        )
    finally:
        distributed.shutdown()
    if rank == 0 and summary is not None:
        print(format_table(summary))
        print(f"wrote {args.out}")
    return 0


def _command_line() -> str:
    """The command as a user would type it (under ``shapcam`` or ``python -m``)."""
    words = sys.argv[1:]
    if words[:1] == ["evaluate"]:
        words = words[1:]
    return shlex.join(["shapcam", "evaluate", *words])


def format_table(summary: dict) -> str:
    """The summary as a plain-text table."""
    width = max(10, *(len(name) for name in summary["methods"]))
    head = (
        f"{'method':<{width}} {'drop%':>7} {'incr%':>7} {'del':>6} {'ins':>6} {'EPG':>6} "
        f"{'PG':>6} {'s/img':>7}"
    )
    lines = [
        f"{summary['model']} {summary['layer']}, {summary['n_images']} images, "
        f"target={summary['target']}, skipped {summary['n_skipped']}",
        head,
    ]
    for name, m in summary["methods"].items():
        if m["n_images"] == 0:
            lines.append(f"{name:<{width}} (no images)")
            continue
        lines.append(
            f"{name:<{width}} {m['avg_drop']:7.2f} {m['avg_increase']:7.2f} "
            f"{m['deletion_auc']:6.3f} {m['insertion_auc']:6.3f} {m['energy_pointing_game']:6.3f} "
            f"{m['pointing_game']:6.3f} {m['seconds_per_image']:7.3f}"
        )
    return "\n".join(lines)
