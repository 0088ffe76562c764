"""The built book in a real browser, offline: maths rendered, widgets shown, images loaded.

Needs a built book (``scripts/build_book.sh``, output in _build/html), Debian's chromium
and the Python ``playwright`` package (never ``playwright install``); skips otherwise.
The pages are served from a local HTTP server and every request that leaves it is
blocked and reported, so a page that needs the network fails. Screenshots go to
test-artifacts/book/.
"""

import functools
import http.server
import json
import os
import re
import threading
from pathlib import Path

import pytest
from browser_support import CHROMIUM, CHROMIUM_ARGS

ROOT = Path(__file__).resolve().parents[1]
HTML = Path(os.environ.get("SHAPCAM_BOOK_HTML", ROOT / "_build" / "html"))
ARTIFACTS = ROOT / "test-artifacts" / "book"
TIMEOUT_MS = 60_000

#: page -> what it must show: "math" (rendered equations), "widgets" (saved widget views),
#: "explorer" (the Shap-CAM explorer's saved view, with its pictures)
PAGES = {
    "book/intro.html": {"math"},
    "book/01_cam_family.html": {"math"},
    "notebooks/02_shapley_values.html": {"math", "widgets"},
    "notebooks/03_exact_vs_sampled.html": {"math"},
    "notebooks/04_shapcam_in_practice.html": {"math"},
    "notebooks/05_explorer.html": {"explorer"},
    "notebooks/06_imagenet_results.html": set(),
    "notebooks/07_performance.html": set(),
    "book/limitations.html": {"math"},
    "book/08_api.html": set(),
    "notebooks/08_your_own_model.html": set(),
    "book/method_notes.html": {"math"},
    "book/notation.html": {"math"},
    "book/references.html": set(),
}

pytestmark = [
    pytest.mark.skipif(not (HTML / "book" / "intro.html").exists(), reason="book not built"),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed"),
]
sync_api = pytest.importorskip("playwright.sync_api")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        chromium.close()


def _open(browser, server, page_path, width=1280):
    """Load ``page_path`` in a ``width`` px wide window; returns (context, page, blocked
    external URLs, failed local URLs, errors)."""
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    blocked, failed, errors = [], [], []

    def route(request_route):
        url = request_route.request.url
        if url.startswith(server) or url.startswith("data:") or url.startswith("blob:"):
            request_route.continue_()
        else:
            blocked.append(url)
            request_route.abort()

    page.route("**/*", route)
    page.on(
        "response",
        lambda response: (
            failed.append(f"{response.status} {response.url}") if response.status >= 400 else None
        ),
    )
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{server}/{page_path}", wait_until="load", timeout=TIMEOUT_MS)
    return context, page, blocked, failed, errors


@pytest.mark.parametrize("page_path", list(PAGES))
def test_page_renders_offline(browser, server, page_path):
    checks = PAGES[page_path]
    context, page, blocked, failed, errors = _open(browser, server, page_path)
    try:
        if "math" in checks:
            page.wait_for_function(
                """() => {
                    const maths = document.querySelectorAll('.math');
                    return maths.length > 0 &&
                        [...maths].every(m => m.querySelector('mjx-container'));
                }""",
                timeout=TIMEOUT_MS,
            )
            text = page.inner_text("main")
            for raw in ("\\(", "\\[", "$$", "\\begin{", "\\frac", "\\sum"):
                assert raw not in text, f"raw TeX {raw!r} left on {page_path}"
        if "widgets" in checks:
            page.wait_for_selector(".widget-slider, .jupyter-widgets", timeout=TIMEOUT_MS)
            views = page.eval_on_selector_all(".jupyter-widgets", "els => els.length")
            assert views > 0, f"no widget views on {page_path}"
            assert page.query_selector(".widget-html-content table") is not None
        if "explorer" in checks:
            shown = ".jupyter-widgets img.widget-image"
            page.wait_for_selector(shown, timeout=TIMEOUT_MS)
            drawn = page.eval_on_selector_all(
                shown, "imgs => imgs.filter(i => i.naturalWidth > 100).length"
            )
            assert drawn >= 3, f"the explorer on {page_path} shows {drawn} pictures"
        page.wait_for_function(
            "() => [...document.images].every(img => img.complete)", timeout=TIMEOUT_MS
        )
        broken = page.eval_on_selector_all(
            "img", "imgs => imgs.filter(i => i.naturalWidth === 0).map(i => i.src)"
        )
        assert not broken, f"images that did not load on {page_path}: {broken}"
        name = page_path.replace("/", "_").removesuffix(".html")
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        assert not blocked, f"{page_path} tried to reach the network: {blocked}"
        assert not failed, f"{page_path} requested missing files: {failed}"
        assert not errors, f"JavaScript errors on {page_path}: {errors}"
    finally:
        context.close()


#: elements of the chapter wider than the window, outside a box that scrolls sideways
OVERFLOWING = """() => {
    const width = document.documentElement.clientWidth;
    const scrolls = el => {
        for (let box = el.parentElement; box && box !== document.body; box = box.parentElement) {
            const x = getComputedStyle(box).overflowX;
            if ((x === 'auto' || x === 'scroll') && box.getBoundingClientRect().right <= width + 1)
                return true;
        }
        return false;
    };
    return [...document.querySelectorAll('article.bd-article *')]
        .filter(el => !el.closest('mjx-assistive-mml'))
        .filter(el => { const r = el.getBoundingClientRect();
                        return r.width > 0 && (r.right > width + 1 || r.left < -1); })
        .filter(el => !scrolls(el))
        .map(el => `${el.tagName.toLowerCase()}.${el.getAttribute('class') || ''}: ` +
                   (el.textContent || '').trim().slice(0, 60));
}"""


@pytest.mark.parametrize("page_path", list(PAGES))
def test_page_fits_a_phone(browser, server, page_path):
    """At 390 px nothing is wider than the window: equations, tables and outputs scroll in
    their own box (book/_assets/layout.css), long signatures and code wrap."""
    context, page, *_ = _open(browser, server, page_path, width=390)
    try:
        if "math" in PAGES[page_path]:
            page.wait_for_function(
                "() => [...document.querySelectorAll('.math')].every("
                "m => m.querySelector('mjx-container'))",
                timeout=TIMEOUT_MS,
            )
        page.wait_for_function(
            "() => [...document.images].every(img => img.complete)", timeout=TIMEOUT_MS
        )
        overflowing = page.evaluate(OVERFLOWING)
        assert not overflowing, f"{page_path} at 390 px: {overflowing[:5]}"
        scroll_width = page.evaluate("() => document.documentElement.scrollWidth")
        assert scroll_width <= 390, f"{page_path} scrolls sideways at 390 px ({scroll_width} px)"
        name = page_path.replace("/", "_").removesuffix(".html")
        page.screenshot(path=str(ARTIFACTS / f"{name}-390px.png"))
    finally:
        context.close()


def test_figures_have_captions():
    """Every figure in the executed chapters is a captioned figure."""
    for page_path in PAGES:
        html = (HTML / page_path).read_text(encoding="utf-8")
        figures = html.count("<figure")
        captions = html.count("<figcaption")
        assert figures == captions, f"{page_path}: {figures} figures, {captions} captions"
        if page_path.startswith("notebooks/"):
            images = html.count('<img alt="_images/') + html.count('src="../_images/')
            assert images <= max(figures, 1) * 2, f"{page_path}: images outside figures"


def test_search_snippets_show_no_tex(browser, server):
    """Search results quote the pages' text: their maths reads as text ("n - 1"), not as
    TeX ("\\(n - 1\\)"); book/_assets/search-tex.js."""
    context, page, blocked, failed, errors = _open(browser, server, "search.html?q=standard+error")
    try:
        # the snippets arrive one by one (each fetches its page): wait for chapter 2's,
        # whose sentence "Each order costs n - 1 evaluations of v" holds maths
        page.wait_for_function(
            "() => [...document.querySelectorAll('ul.search p.context')]"
            ".some(p => p.textContent.includes('evaluations of'))",
            timeout=TIMEOUT_MS,
        )
        snippets = page.eval_on_selector_all(
            "ul.search p.context", "ps => ps.map(p => p.textContent)"
        )
        tex = [s for s in snippets if any(mark in s for mark in ("\\(", "\\)", "\\sqrt", "$$"))]
        assert not tex, f"TeX in search results: {tex[:2]}"
        assert any("n - 1 evaluations of" in s for s in snippets), snippets
        assert not blocked and not failed and not errors, (blocked, failed, errors)
    finally:
        context.close()


#: book/shapcam.mplstyle's smallest text, in pixels at its 100 dpi (11 pt)
STYLE_TEXT_PX = 11 * 100 / 72


@pytest.mark.parametrize("page_path", [p for p in PAGES if p.startswith("notebooks/")])
def test_figure_text_is_at_least_9_px(browser, server, page_path):
    """A chapter's figures are shown large enough in a 1280 px window that the book style's
    smallest text is at least 9 px on the page, and the notebook draws with that style
    without setting a smaller font size."""
    notebook = ROOT / page_path.replace(".html", ".ipynb")
    source = "".join(
        "".join(cell["source"])
        for cell in json.loads(notebook.read_text())["cells"]
        if cell["cell_type"] == "code"
    )
    if "matplotlib" in source:
        assert 'plt.style.use("../book/shapcam.mplstyle")' in source, notebook.name
    small = [int(size) for size in re.findall(r"fontsize=(\d+)", source) if int(size) < 11]
    assert not small, f"{notebook.name} sets font sizes {small}"
    context, page, *_ = _open(browser, server, page_path)
    try:
        page.wait_for_function(
            "() => [...document.images].every(img => img.complete)", timeout=TIMEOUT_MS
        )
        shown = page.eval_on_selector_all(
            "article figure img",
            "imgs => imgs.map(i => [i.src.split('/').pop(), i.naturalWidth,"
            " i.getBoundingClientRect().width])",
        )
    finally:
        context.close()
    small_text = [
        (name, f"{STYLE_TEXT_PX * width / natural:.1f} px")
        for name, natural, width in shown
        if STYLE_TEXT_PX * width / natural < 9
    ]
    assert not small_text, f"{page_path}: figures whose 11 pt text is under 9 px: {small_text}"
