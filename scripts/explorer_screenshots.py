"""Screenshots of the explorer for chapter 5: the annotated map and the comparison row.

``python scripts/explorer_screenshots.py`` serves a one-cell notebook with Voila, opens it
in Debian's chromium (playwright, as the browser tests do: ``tests/browser_support.py``)
at 1100 x 900 px, and writes ``book/figures/explorer-overlay.png`` (the map with its
player grid, 2-SE dots and colour bar, the status and the efficiency sentence) and
``book/figures/explorer-comparison.png`` (the comparison row). The explorer shows
scikit-image's Chelsea at ``blocks.5`` (where Shap-CAM and Grad-CAM part ways) with 256
orderings; nothing is downloaded.
"""

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the browser tests' servers and chromium flags

from browser_support import playwright_api, voila_page, wait_status  # noqa: E402

OUT = ROOT / "book" / "figures"
CELL = """from shapcam_widgets.widgets import ShapCAMExplorer

explorer = ShapCAMExplorer(imagenet=False, layer="blocks.5", n_samples=256, device="cpu")
explorer.set(compare=True)
explorer"""


def notebook(folder: Path) -> Path:
    path = folder / "explorer_screenshots.ipynb"
    cell = {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None}
    path.write_text(
        json.dumps(
            {
                "cells": [{**cell, "source": CELL}],
                "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
                "nbformat": 4,
                "nbformat_minor": 5,
            }
        )
    )
    return path


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory() as folder,
        voila_page(Path(folder), notebook(Path(folder)), width=1100) as page,
    ):
        page.set_viewport_size({"width": 1100, "height": 900})
        wait_status(page, r"done · 256 orderings")
        comparison = page.locator("img.shapcam-comparison").first
        playwright_api().expect(comparison).to_be_visible(timeout=120_000)
        wait_status(page, r"done · 256 orderings")
        overlay = page.locator("img.shapcam-overlay").first
        overlay.evaluate("(e) => e.scrollIntoView(true)")
        # the map's column: the map, the status line and the efficiency sentence
        column = overlay.locator("xpath=..")
        column.screenshot(path=str(OUT / "explorer-overlay.png"))
        comparison.screenshot(path=str(OUT / "explorer-comparison.png"))
    for name in ("explorer-overlay.png", "explorer-comparison.png"):
        print(f"wrote {OUT / name}")


if __name__ == "__main__":
    main()
