"""Draw the galleries of evaluation runs into <run folder>/gallery/<method>.jpg.

    python scripts/render_galleries.py results [results/blocks.5 ...] [--data DIR]

Run after `shapcam evaluate` (the maps are recomputed from the images with the run's
settings and checked against its records); the book shows these figures when it is
built without the ImageNet folder.
"""

import argparse
import sys

from shapcam_widgets.evaluation.data import resolve_root
from shapcam_widgets.evaluation.gallery import save_galleries


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="folders holding a results.json")
    parser.add_argument("--data", default=None, help="ImageNet LOC folder (see shapcam evaluate)")
    parser.add_argument("--methods", default="shapcam,gradcam")
    args = parser.parse_args()
    for folder in args.folders:
        for path in save_galleries(folder, resolve_root(args.data), args.methods.split(",")):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
