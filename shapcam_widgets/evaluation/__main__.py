"""``python -m shapcam_widgets.evaluation``: the evaluate subcommand on its own."""

import argparse
import sys

from ..errors import ShapCAMError
from .cli import configure_parser, run_evaluate


def main(argv=None) -> int:
    parser = configure_parser(
        argparse.ArgumentParser(
            prog="python -m shapcam_widgets.evaluation",
            description="Shap-CAM and the CAM family on ImageNet: faithfulness and localization.",
        )
    )
    args = parser.parse_args(argv)
    if argv is not None:
        sys.argv[1:] = argv
    try:
        return run_evaluate(args)
    except ShapCAMError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
