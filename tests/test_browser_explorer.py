"""The explorer in a real browser: JupyterLab 4 and Voila, driven by Debian's chromium.

Skips when chromium, playwright, JupyterLab or Voila is missing. Screenshots go to
test-artifacts/. Debian's chromium is driven by playwright through ``executable_path`` with
the flags of ``browser_support`` (never ``playwright install``: it downloads a browser).
"""

import re

import pytest
from browser_support import (
    APP,
    ARTIFACTS,
    NEEDS_CHROMIUM,
    TIMEOUT_MS,
    efficiency,
    lab_page,
    move_samples_slider,
    overlay_pixels,
    settled_overlay,
    top_probability,
    upload,
    voila_page,
    wait_status,
    wait_v_full,
)

pytestmark = NEEDS_CHROMIUM
sync_api = pytest.importorskip("playwright.sync_api")


def _exercise(page, name: str, change_class: bool) -> None:
    """From the first map (8 orderings): slider to 64 orderings, then the second class."""
    first = wait_status(page, r"done · 8 orderings")
    page.locator("img.shapcam-overlay").first.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / f"{name}-first.png"), full_page=True)
    before = overlay_pixels(page)
    move_samples_slider(page, 0.5)  # stop 6 of 0..12: 2**6 = 64 orderings
    wait_status(page, r"done · 64 orderings")
    after_slider = overlay_pixels(page)
    assert after_slider != before, "the Shap-CAM image did not change with the sample count"
    if change_class:
        first_class = re.search(r"\(#(\d+)\)", first)[1]
        select = page.locator(".shapcam-target select").first
        second = select.locator("option").nth(1).get_attribute("value")
        select.select_option(index=1)
        text = wait_status(page, r"done · 64 orderings · .*\(#(?!" + first_class + r"\))\d+\)")
        assert f"(#{first_class})" not in text
        assert overlay_pixels(page) != after_slider, "the image did not change with the class"
        assert second is not None
    total, difference = efficiency(page)
    assert total == pytest.approx(difference, abs=2e-6)
    assert "efficiency holds" in page.locator(".shapcam-efficiency").first.text_content()
    assert page.locator(".shapcam-error").count() == 0
    page.screenshot(path=str(ARTIFACTS / f"{name}-final.png"), full_page=True)


def test_explorer_in_jupyterlab(tmp_path):
    pytest.importorskip("ipywidgets")
    with lab_page(tmp_path) as page:
        page.locator(".lm-MenuBar-item", has_text="Run").first.click()
        page.locator(
            '.lm-Menu-item[data-command="runmenu:run-all"],'
            '.lm-Menu-item[data-command="notebook:run-all-cells"]'
        ).first.click()
        _exercise(page, "jupyterlab", change_class=True)
        kernel = page.locator(".jp-StatusBar-Widget", has_text="Idle")
        sync_api.expect(kernel.first).to_be_visible(timeout=TIMEOUT_MS)  # kernel idle


def test_explorer_in_voila(tmp_path):
    with voila_page(tmp_path) as page:
        _exercise(page, "voila", change_class=True)


def test_app_notebook_in_voila(tmp_path):
    """Issue 11, defect 9: ``voila notebooks/explorer_app.ipynb`` shows the explorer, and
    no book markup (labels, roles, citations)."""
    with voila_page(tmp_path, APP) as page:
        wait_status(page, r"done · 64 orderings")
        sync_api.expect(page.locator("img.shapcam-overlay").first).to_be_visible()
        text = page.locator("body").inner_text()
        for markup in ("(chapter-", "{doc}", "{cite", "{ref}"):
            assert markup not in text
        page.screenshot(path=str(ARTIFACTS / "voila-app.png"), full_page=True)


#: the widgets (controls and panels) whose right edge passes the viewport's or their box's
OVERFLOWING = """() => [...document.querySelectorAll(".jupyter-widgets")]
    .filter((e) => e.getBoundingClientRect().width > 0)
    .filter((e) => e.getBoundingClientRect().right > Math.min(
        window.innerWidth, e.parentElement.getBoundingClientRect().right) + 0.5)
    .map((e) => `${e.className}: ${Math.round(e.getBoundingClientRect().right)} px`)"""


def test_explorer_fits_a_360_px_phone_in_voila(tmp_path):
    """Issue 11, defect 8: at 360 px no control or panel is wider than the viewport or
    its box (the controls column was 420 px at least) and the page does not scroll
    sideways."""
    with voila_page(tmp_path, width=360) as page:
        wait_status(page, r"done · 8 orderings")
        page.screenshot(path=str(ARTIFACTS / "voila-360px.png"), full_page=True)
        assert page.evaluate(OVERFLOWING) == []
        assert page.evaluate("document.documentElement.scrollWidth") <= 360


def test_explorer_defects_in_voila(tmp_path):
    """Issue 11, defects 1 to 3 in a real browser: every slider value, 1 and 2 included,
    shows its map; a count that comes back (also after rapid drags) is drawn again; a
    second upload under the same file name is explained afresh."""
    from PIL import Image
    from skimage import data

    with voila_page(tmp_path) as page:
        wait_status(page, r"done · 8 orderings")
        move_samples_slider(page, 0.5)  # 64 orderings
        at_64 = settled_overlay(page, r"done · 64 orderings")
        for fraction in (0.0, 1 / 12):  # 1 and 2 orderings: one antithetic pair
            move_samples_slider(page, fraction)
            wait_status(page, r"done · 2 orderings")
            assert page.locator(".shapcam-error").count() == 0
        move_samples_slider(page, 0.5)
        assert settled_overlay(page, r"done · 64 orderings") == at_64
        for fraction in (0.9, 0.0, 0.3, 1 / 12, 0.75, 0.1, 0.0, 0.2, 0.4):  # rapid drags
            move_samples_slider(page, fraction)
        move_samples_slider(page, 0.5)
        assert settled_overlay(page, r"done · 64 orderings") == at_64
        page.screenshot(path=str(ARTIFACTS / "voila-slider.png"), full_page=True)

        cat, mug = Image.fromarray(data.chelsea()), Image.fromarray(data.coffee())
        upload(page, "my_bus.png", cat)
        wait_v_full(page, top_probability(cat))
        cat_overlay = settled_overlay(page, r"done · 64 orderings")
        upload(page, "my_bus.png", mug)
        wait_v_full(page, top_probability(mug))
        assert settled_overlay(page, r"done · 64 orderings") != cat_overlay
        assert page.locator(".shapcam-error").count() == 0
        page.screenshot(path=str(ARTIFACTS / "voila-reupload.png"), full_page=True)
