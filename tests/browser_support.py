"""Where Debian's chromium is and how it starts here (root, no network, no GPU)."""

import os
import shutil

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
