"""Issue 11 in a real browser (Voila, Debian's chromium): Enter in the class search box
chooses the best match; the image filter narrows the image choices without changing the
map."""

import pytest
from browser_support import (
    ARTIFACTS,
    NEEDS_CHROMIUM,
    overlay_pixels,
    settled_overlay,
    voila_page,
    wait_status,
)

pytestmark = NEEDS_CHROMIUM
sync_api = pytest.importorskip("playwright.sync_api")


def test_search_enter_and_image_filter_in_voila(tmp_path):
    with voila_page(tmp_path) as page:
        wait_status(page, r"done · 8 orderings")
        search = page.locator(".shapcam-search input").first
        search.press_sequentially("tiger", delay=30)  # as one types, then Enter at once
        search.press("Enter")
        shown = settled_overlay(page, r"done · 8 orderings · tiger \(#292\)")
        sync_api.expect(search).to_have_value("")
        status = page.locator(".shapcam-status").first.inner_text()

        images = page.locator(".shapcam-image select option")
        assert images.count() == 6
        count = page.locator(".shapcam-image-count").first
        sync_api.expect(count).to_have_text("6 images")
        page.locator(".shapcam-image-filter input").first.press_sequentially("co", delay=30)
        sync_api.expect(count).to_have_text("1 of 6 images")
        # coffee, and chelsea: the image shown stays among the choices
        sync_api.expect(images).to_have_count(2)
        assert images.all_inner_texts() == ["chelsea", "coffee"]
        sync_api.expect(page.locator(".shapcam-image select").first).to_have_value("chelsea")
        page.wait_for_timeout(1000)
        assert page.locator(".shapcam-status").first.inner_text() == status
        assert overlay_pixels(page) == shown, "filtering the images changed the map"
        assert page.locator(".shapcam-error").count() == 0
        page.screenshot(path=str(ARTIFACTS / "voila-search-filter.png"), full_page=True)
