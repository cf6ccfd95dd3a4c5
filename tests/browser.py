"""Real headless Chromium for the browser checks (`tune report` pages, `tune dashboard`).

Debian's chromium, installed by scripts/system_deps.sh; tests that need it are marked
``needs_chromium`` and skip, saying so loudly, where it is missing.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="BROWSER CHECK NOT RUN: chromium is not installed (install it with `bash scripts/system_deps.sh`)",
)


def chromium(profile: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Real headless Chromium with its own profile directory (concurrent runs share nothing)."""
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={profile}", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def dump_dom(url: str, profile: Path, budget_ms: int = 5000) -> str:
    """The DOM after the page's scripts ran (virtual time lets a React app fetch and render)."""
    return chromium(profile, f"--virtual-time-budget={budget_ms}", "--dump-dom", url).stdout


def screenshot(url: str, out: Path, profile: Path, size: str = "1280,1800", budget_ms: int = 5000) -> Image.Image:
    chromium(profile, f"--virtual-time-budget={budget_ms}", f"--window-size={size}", f"--screenshot={out}", "--hide-scrollbars", url)
    return Image.open(out)


def assert_not_blank(image: Image.Image) -> None:
    """A page that drew something: many colours, dark text or lines on a light page."""
    rgb = image.convert("RGB")
    colours = rgb.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 50, f"only {len(colours)} colours: a blank page"
    low, high = rgb.convert("L").getextrema()
    assert high - low > 100, (low, high)
