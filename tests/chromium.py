"""Headless Chromium (Debian's ``chromium`` package; scripts/setup.sh installs it) for tests and
for the README's screenshot: load a page, return its DOM after the scripts ran and every console
message, or write a screenshot.

Console messages come from Chromium's own log (``--enable-logging=stderr``), one
``…:INFO:CONSOLE…] "message", source: URL (line)`` line each — uncaught errors included — so a
page needs no instrumentation of its own. The flags keep it offline and self-contained: no
sandbox (root in a container), no GPU, no background or component-update traffic, a fresh
profile per run.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]
CONSOLE = re.compile(r":CONSOLE[:(]\d*\)?\] (.*)$")
#: Chromium's own pages log to the same console (e.g. "Slow network is detected … Fallback
#: font" from chrome://resources on a loaded machine): not the page's messages.
BROWSER_OWN = re.compile(r', source: chrome[a-z-]*://\S* \(\d+\)$')  # chrome://, chrome-untrusted://


def _console(stderr: str) -> list[str]:
    return [m.group(1) for ln in stderr.splitlines()
            if (m := CONSOLE.search(ln)) and not BROWSER_OWN.search(m.group(1))]


def binary() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise RuntimeError("chromium is not installed: run scripts/setup.sh (it installs Debian's chromium)")
    return path


def _run(url: str, extra: list[str], budget_ms: int, timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="es-chromium-") as profile:
        return subprocess.run([binary(), *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
                               f"--virtual-time-budget={budget_ms}", *extra, url],
                              capture_output=True, text=True, timeout=timeout)


def load(url: str, *, budget_ms: int = 15000, timeout: float = 120) -> tuple[str, list[str]]:
    """(the DOM after the page's scripts ran, its console messages)."""
    res = _run(url, ["--dump-dom"], budget_ms, timeout)
    if res.returncode != 0:
        raise RuntimeError(f"chromium exited {res.returncode}: {res.stderr[-2000:]}")
    return res.stdout, _console(res.stderr)


def screenshot(url: str, out: Path, *, size: tuple[int, int] = (1300, 1000), budget_ms: int = 15000,
               timeout: float = 120) -> list[str]:
    """Write a PNG of the page at ``size``; returns the console messages."""
    res = _run(url, [f"--window-size={size[0]},{size[1]}", f"--screenshot={out}"], budget_ms, timeout)
    if res.returncode != 0 or not Path(out).exists():
        raise RuntimeError(f"chromium screenshot failed ({res.returncode}): {res.stderr[-2000:]}")
    return _console(res.stderr)
