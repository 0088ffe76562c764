"""The explorer in a real browser: JupyterLab 4 and Voila, driven by Debian's chromium.

Skips when chromium, playwright, JupyterLab or Voila is missing. Screenshots go to
test-artifacts/. Debian's chromium is driven by playwright through ``executable_path`` with
the flags of ``browser_support`` (never ``playwright install``: it downloads a browser).
"""

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from browser_support import CHROMIUM, CHROMIUM_ARGS

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "tests" / "browser" / "explorer.ipynb"
APP = ROOT / "notebooks" / "explorer_app.ipynb"
ARTIFACTS = ROOT / "test-artifacts"
EFFICIENCY = re.compile(r"sum of phi = (-?[\d.]+); v\(full\) - v\(empty\) = .* = (-?[\d.]+) ")
TIMEOUT_MS = 90_000

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed"),
]
sync_api = pytest.importorskip("playwright.sync_api")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_http(url: str, process: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    """Wait until ``url`` answers 200 (an http URL) or accepts connections (host:port)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if not url.startswith("http"):
                host, port = url.rsplit(":", 1)
                socket.create_connection((host, int(port)), timeout=5).close()
                return
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the server did not answer {url} in {timeout} s:\n{log.read_text()[-3000:]}")


@contextmanager
def _server(command: list[str], url: str, home: Path):
    """Run a Jupyter server with its config, data and runtime dirs inside ``home``."""
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    log = home / "server.log"
    with open(log, "w") as output:
        process = subprocess.Popen(
            command,
            cwd=home / "notebooks",
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_http(url, process, log)
        yield log
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


def _home(tmp_path: Path, notebook: Path = NOTEBOOK) -> Path:
    home = tmp_path / "jupyter"
    for sub in ("config/labconfig", "runtime", "workspaces", "notebooks"):
        (home / sub).mkdir(parents=True)
    # no announcements, news or update checks (no network here)
    (home / "config/labconfig/page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
    )
    notification = home / "settings/@jupyterlab/apputils-extension/notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    shutil.copy(notebook, home / "notebooks" / notebook.name)
    return home


@contextmanager
def _browser(tmp_path: Path, width: int = 1400):
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": width, "height": 1100},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            yield page
        finally:
            context.close()


def _wait_status(page, pattern: str) -> str:
    """Wait until the explorer's status line matches ``pattern``; return its text."""
    status = page.locator(".shapcam-status").first
    sync_api.expect(status).to_contain_text(re.compile(pattern), timeout=TIMEOUT_MS)
    return status.inner_text()


def _overlay_pixels(page) -> bytes:
    return page.locator("img.shapcam-overlay").first.screenshot()


def _move_samples_slider(page, fraction: float) -> None:
    """Drag the sample-count slider's handle to ``fraction`` of its track."""
    slider = page.locator(".shapcam-samples .noUi-target").first
    handle = page.locator(".shapcam-samples .noUi-handle").first
    box, track = handle.bounding_box(), slider.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(track["x"] + fraction * track["width"], box["y"] + box["height"] / 2, steps=8)
    page.mouse.up()


def _efficiency(page) -> tuple[float, float]:
    text = page.locator(".shapcam-efficiency").first.text_content()
    found = EFFICIENCY.search(text)
    assert found, text
    return float(found[1]), float(found[2])


def _exercise(page, name: str, change_class: bool) -> None:
    """From the first map (8 orderings): slider to 64 orderings, then the second class."""
    first = _wait_status(page, r"done · 8 orderings")
    page.locator("img.shapcam-overlay").first.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / f"{name}-first.png"), full_page=True)
    before = _overlay_pixels(page)
    _move_samples_slider(page, 0.5)  # stop 6 of 0..12: 2**6 = 64 orderings
    _wait_status(page, r"done · 64 orderings")
    after_slider = _overlay_pixels(page)
    assert after_slider != before, "the Shap-CAM image did not change with the sample count"
    if change_class:
        first_class = re.search(r"\(#(\d+)\)", first)[1]
        select = page.locator(".shapcam-target select").first
        second = select.locator("option").nth(1).get_attribute("value")
        select.select_option(index=1)
        text = _wait_status(page, r"done · 64 orderings · .*\(#(?!" + first_class + r"\))\d+\)")
        assert f"(#{first_class})" not in text
        assert _overlay_pixels(page) != after_slider, "the image did not change with the class"
        assert second is not None
    total, difference = _efficiency(page)
    assert total == pytest.approx(difference, abs=2e-6)
    assert "efficiency holds" in page.locator(".shapcam-efficiency").first.text_content()
    assert page.locator(".shapcam-error").count() == 0
    page.screenshot(path=str(ARTIFACTS / f"{name}-final.png"), full_page=True)


def test_explorer_in_jupyterlab(tmp_path):
    pytest.importorskip("jupyterlab")
    pytest.importorskip("ipywidgets")
    ARTIFACTS.mkdir(exist_ok=True)
    home, port, token = _home(tmp_path), _free_port(), secrets.token_hex(16)
    command = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
        "--ip=127.0.0.1", f"--port={port}", f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={home / 'notebooks'}",
        f"--LabApp.workspaces_dir={home / 'workspaces'}",
        f"--LabApp.user_settings_dir={home / 'settings'}",
        "--LabApp.news_url=", "--ServerApp.open_browser=False",
    ]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    with _server(command, f"{base}/api/status?token={token}", home), _browser(tmp_path) as page:
        page.goto(f"{base}/lab/tree/{NOTEBOOK.name}?token={token}&reset")
        page.locator(".jp-NotebookPanel .jp-Notebook").first.wait_for()
        kernel = page.locator(".jp-StatusBar-Widget", has_text="Idle")
        sync_api.expect(kernel.first).to_be_visible(timeout=TIMEOUT_MS)
        page.locator(".lm-MenuBar-item", has_text="Run").first.click()
        page.locator(
            '.lm-Menu-item[data-command="runmenu:run-all"],'
            '.lm-Menu-item[data-command="notebook:run-all-cells"]'
        ).first.click()
        _exercise(page, "jupyterlab", change_class=True)
        sync_api.expect(kernel.first).to_be_visible(timeout=TIMEOUT_MS)  # kernel idle


@contextmanager
def _voila_page(tmp_path: Path, notebook: Path = NOTEBOOK, width: int = 1400):
    """A chromium page ``width`` px wide on ``notebook`` (by default the test notebook)
    served by Voila."""
    pytest.importorskip("voila")
    ARTIFACTS.mkdir(exist_ok=True)
    home, port, token = _home(tmp_path, notebook), _free_port(), secrets.token_hex(16)
    command = [
        sys.executable, "-m", "voila", str(home / "notebooks" / notebook.name),
        "--no-browser", "--Voila.ip=127.0.0.1", f"--port={port}", f"--token={token}",
    ]  # fmt: skip
    with _server(command, f"127.0.0.1:{port}", home), _browser(tmp_path, width) as page:
        page.goto(f"http://127.0.0.1:{port}/?token={token}")
        yield page


def test_explorer_in_voila(tmp_path):
    with _voila_page(tmp_path) as page:
        _exercise(page, "voila", change_class=True)


def test_app_notebook_in_voila(tmp_path):
    """Issue 11, defect 9: ``voila notebooks/explorer_app.ipynb`` shows the explorer, and
    no book markup (labels, roles, citations)."""
    with _voila_page(tmp_path, APP) as page:
        _wait_status(page, r"done · 64 orderings")
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
    with _voila_page(tmp_path, width=360) as page:
        _wait_status(page, r"done · 8 orderings")
        page.screenshot(path=str(ARTIFACTS / "voila-360px.png"), full_page=True)
        assert page.evaluate(OVERFLOWING) == []
        assert page.evaluate("document.documentElement.scrollWidth") <= 360


V_FULL = re.compile(r"v\(full\) - v\(empty\) = (-?[\d.]+)")


def _top_probability(picture) -> float:
    """The top-1 probability of Lite0 on ``picture``, as ``shapcam explain`` computes it."""
    import torch

    from shapcam_widgets import load_model

    model, preprocess = load_model("efficientnet_lite0")
    with torch.inference_mode():
        return float(model(preprocess(picture)).softmax(dim=1).max())


def _upload(page, name: str, picture) -> None:
    """Choose ``picture`` as a PNG file called ``name`` with the upload button."""
    import io

    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    with page.expect_file_chooser() as chooser:
        page.locator(".shapcam-upload").first.click()
    chooser.value.set_files(
        files=[{"name": name, "mimeType": "image/png", "buffer": buffer.getvalue()}]
    )


def _wait_v_full(page, expected: float, timeout: float = 60) -> None:
    """Wait until the efficiency line's v(full) is ``expected`` and the status done."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = page.locator(".shapcam-efficiency").first.text_content()
        found = V_FULL.search(text)
        status = page.locator(".shapcam-status").first.inner_text()
        if found and abs(float(found[1]) - expected) < 1e-5 and "done" in status:
            return
        time.sleep(0.3)
    pytest.fail(f"v(full) never became {expected:.6f}: {text}")


def _settled_overlay(page, pattern: str) -> bytes:
    """The overlay once the status matches ``pattern`` and has stayed so for a second."""
    _wait_status(page, pattern)
    time.sleep(1.0)
    _wait_status(page, pattern)
    return _overlay_pixels(page)


def test_explorer_defects_in_voila(tmp_path):
    """Issue 11, defects 1 to 3 in a real browser: every slider value, 1 and 2 included,
    shows its map; a count that comes back (also after rapid drags) is drawn again; a
    second upload under the same file name is explained afresh."""
    from PIL import Image
    from skimage import data

    with _voila_page(tmp_path) as page:
        _wait_status(page, r"done · 8 orderings")
        _move_samples_slider(page, 0.5)  # 64 orderings
        at_64 = _settled_overlay(page, r"done · 64 orderings")
        for fraction in (0.0, 1 / 12):  # 1 and 2 orderings: one antithetic pair
            _move_samples_slider(page, fraction)
            _wait_status(page, r"done · 2 orderings")
            assert page.locator(".shapcam-error").count() == 0
        _move_samples_slider(page, 0.5)
        assert _settled_overlay(page, r"done · 64 orderings") == at_64
        for fraction in (0.9, 0.0, 0.3, 1 / 12, 0.75, 0.1, 0.0, 0.2, 0.4):  # rapid drags
            _move_samples_slider(page, fraction)
        _move_samples_slider(page, 0.5)
        assert _settled_overlay(page, r"done · 64 orderings") == at_64
        page.screenshot(path=str(ARTIFACTS / "voila-slider.png"), full_page=True)

        cat, mug = Image.fromarray(data.chelsea()), Image.fromarray(data.coffee())
        _upload(page, "my_bus.png", cat)
        _wait_v_full(page, _top_probability(cat))
        cat_overlay = _settled_overlay(page, r"done · 64 orderings")
        _upload(page, "my_bus.png", mug)
        _wait_v_full(page, _top_probability(mug))
        assert _settled_overlay(page, r"done · 64 orderings") != cat_overlay
        assert page.locator(".shapcam-error").count() == 0
        page.screenshot(path=str(ARTIFACTS / "voila-reupload.png"), full_page=True)
