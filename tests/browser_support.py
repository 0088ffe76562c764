"""Browser tests' common parts: where Debian's chromium is and how it starts here (root,
no network, no GPU), Jupyter servers (JupyterLab, Voila) in a private home, and the
explorer's page helpers (its status line, overlay, slider, upload button).

Playwright drives Debian's chromium through ``executable_path`` with ``CHROMIUM_ARGS``
(never ``playwright install``: it downloads a browser).
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

CHROMIUM = os.environ.get("SHAPCAM_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

#: Browser tests skip where Debian's chromium is missing.
NEEDS_CHROMIUM = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "tests" / "browser" / "explorer.ipynb"
APP = ROOT / "notebooks" / "explorer_app.ipynb"
ARTIFACTS = ROOT / "test-artifacts"
EFFICIENCY = re.compile(r"sum of phi = (-?[\d.]+); v\(full\) - v\(empty\) = .* = (-?[\d.]+) ")
TIMEOUT_MS = 90_000


def playwright_api():
    """playwright.sync_api (the test skips without it)."""
    return pytest.importorskip("playwright.sync_api")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, process: subprocess.Popen, log: Path, timeout: float = 90) -> None:
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
def server(command: list[str], url: str, home: Path):
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
        wait_http(url, process, log)
        yield log
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


def jupyter_home(tmp_path: Path, notebook: Path = NOTEBOOK) -> Path:
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
def browser(tmp_path: Path, width: int = 1400):
    with playwright_api().sync_playwright() as playwright:
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


def wait_status(page, pattern: str) -> str:
    """Wait until the explorer's status line matches ``pattern``; return its text."""
    status = page.locator(".shapcam-status").first
    playwright_api().expect(status).to_contain_text(re.compile(pattern), timeout=TIMEOUT_MS)
    return status.inner_text()


def overlay_pixels(page) -> bytes:
    return page.locator("img.shapcam-overlay").first.screenshot()


def move_samples_slider(page, fraction: float) -> None:
    """Drag the sample-count slider's handle to ``fraction`` of its track."""
    slider = page.locator(".shapcam-samples .noUi-target").first
    handle = page.locator(".shapcam-samples .noUi-handle").first
    box, track = handle.bounding_box(), slider.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(track["x"] + fraction * track["width"], box["y"] + box["height"] / 2, steps=8)
    page.mouse.up()


def efficiency(page) -> tuple[float, float]:
    text = page.locator(".shapcam-efficiency").first.text_content()
    found = EFFICIENCY.search(text)
    assert found, text
    return float(found[1]), float(found[2])


@contextmanager
def lab_page(tmp_path: Path, notebook: Path = NOTEBOOK, width: int = 1400):
    """A chromium page ``width`` px wide on ``notebook`` (by default the test notebook)
    opened in JupyterLab, its kernel idle; nothing run yet."""
    pytest.importorskip("jupyterlab")
    ARTIFACTS.mkdir(exist_ok=True)
    home, port, token = jupyter_home(tmp_path, notebook), free_port(), secrets.token_hex(16)
    command = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
        "--ip=127.0.0.1", f"--port={port}", f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={home / 'notebooks'}",
        f"--LabApp.workspaces_dir={home / 'workspaces'}",
        f"--LabApp.user_settings_dir={home / 'settings'}",
        "--LabApp.news_url=", "--ServerApp.open_browser=False",
    ]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    with (
        server(command, f"{base}/api/status?token={token}", home),
        browser(tmp_path, width) as page,
    ):
        page.goto(f"{base}/lab/tree/{notebook.name}?token={token}&reset")
        page.locator(".jp-NotebookPanel .jp-Notebook").first.wait_for()
        idle = page.locator(".jp-StatusBar-Widget", has_text="Idle").first
        playwright_api().expect(idle).to_be_visible(timeout=TIMEOUT_MS)
        yield page


@contextmanager
def voila_page(tmp_path: Path, notebook: Path = NOTEBOOK, width: int = 1400):
    """A chromium page ``width`` px wide on ``notebook`` (by default the test notebook)
    served by Voila."""
    pytest.importorskip("voila")
    ARTIFACTS.mkdir(exist_ok=True)
    home, port, token = jupyter_home(tmp_path, notebook), free_port(), secrets.token_hex(16)
    command = [
        sys.executable, "-m", "voila", str(home / "notebooks" / notebook.name),
        "--no-browser", "--Voila.ip=127.0.0.1", f"--port={port}", f"--token={token}",
    ]  # fmt: skip
    with server(command, f"127.0.0.1:{port}", home), browser(tmp_path, width) as page:
        page.goto(f"http://127.0.0.1:{port}/?token={token}")
        yield page


V_FULL = re.compile(r"v\(full\) - v\(empty\) = (-?[\d.]+)")


def top_probability(picture) -> float:
    """The top-1 probability of Lite0 on ``picture``, as ``shapcam explain`` computes it."""
    import torch

    from shapcam_widgets import load_model

    model, preprocess = load_model("efficientnet_lite0")
    with torch.inference_mode():
        return float(model(preprocess(picture)).softmax(dim=1).max())


def upload(page, name: str, picture) -> None:
    """Choose ``picture`` as a PNG file called ``name`` with the upload button."""
    import io

    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    with page.expect_file_chooser() as chooser:
        page.locator(".shapcam-upload").first.click()
    chooser.value.set_files(
        files=[{"name": name, "mimeType": "image/png", "buffer": buffer.getvalue()}]
    )


def wait_v_full(page, expected: float, timeout: float = 60) -> None:
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


def settled_overlay(page, pattern: str) -> bytes:
    """The overlay once the status matches ``pattern`` and has stayed so for a second."""
    wait_status(page, pattern)
    time.sleep(1.0)
    wait_status(page, pattern)
    return overlay_pixels(page)
