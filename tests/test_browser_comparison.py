"""The comparison row in a real browser (Voila, Debian's chromium): at 1100 x 900 px the
Shap-CAM map and the whole comparison row are on screen together (issue 11)."""

import pytest
from browser_support import ARTIFACTS, NEEDS_CHROMIUM, TIMEOUT_MS, voila_page, wait_status

pytestmark = NEEDS_CHROMIUM
sync_api = pytest.importorskip("playwright.sync_api")


def inside_viewport(page, selector: str) -> dict:
    """The element's box, and whether it lies wholly inside the viewport."""
    return page.locator(selector).first.evaluate(
        """(e) => { const r = e.getBoundingClientRect();
            return {top: r.top, bottom: r.bottom, left: r.left, right: r.right,
                    inside: r.top >= 0 && r.left >= 0 && r.width > 0
                            && r.bottom <= window.innerHeight && r.right <= window.innerWidth}; }"""
    )


def test_map_and_comparison_row_fit_one_1100_by_900_screen(tmp_path):
    with voila_page(tmp_path, width=1100) as page:
        page.set_viewport_size({"width": 1100, "height": 900})
        wait_status(page, r"done · 8 orderings")
        page.locator(".shapcam-compare input[type=checkbox]").first.check()
        # the button's cost appears once the row is drawn and one pass is timed
        button = page.locator(".shapcam-scorecam").first
        sync_api.expect(button).to_contain_text(" s)", timeout=TIMEOUT_MS)
        wait_status(page, r"done · 8 orderings")
        comparison = page.locator("img.shapcam-comparison").first
        sync_api.expect(comparison).to_be_visible()
        sync_api.expect(page.locator(".shapcam-comparison-scale").first).to_be_visible()
        # the map at the top of the window: the row must fit in what is left of it
        page.locator("img.shapcam-overlay").first.evaluate("(e) => e.scrollIntoView(true)")
        page.screenshot(path=str(ARTIFACTS / "voila-comparison-1100x900.png"))
        overlay = inside_viewport(page, "img.shapcam-overlay")
        row = inside_viewport(page, "img.shapcam-comparison")
        assert overlay["inside"], overlay
        assert row["inside"], row
        assert row["top"] >= overlay["bottom"]  # below the map, not beside it
        assert page.locator(".shapcam-error").count() == 0
