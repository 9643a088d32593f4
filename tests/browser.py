"""Headless Chromium for the report's layout tests: find it, run it, and measure a page after it loads.

Without a Chromium binary the tests that need one skip, except on CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
]

# After load: every element whose content is wider than its box (a table cut off, or a scroller hiding
# columns) and how wide the page is. ``.card`` and scrollers (overflow-x auto or scroll) are the boxes a
# table must fit; overflow into a card's padding counts too, as the card's edge then crosses the text.
OVERFLOW_PROBE = """<script>
window.addEventListener('load', () => {
  const cut = [];
  for (const t of document.querySelectorAll('table')) {
    if (t.classList.contains('tiles')) continue;  // image grids scroll by design
    const r = t.getBoundingClientRect();
    for (let box = t.parentElement; box && box !== document.body; box = box.parentElement) {
      const s = getComputedStyle(box), b = box.getBoundingClientRect();
      const scroller = s.overflowX === 'auto' || s.overflowX === 'scroll';
      if (!scroller && !box.classList.contains('card')) continue;
      const inner = b.right - parseFloat(s.borderRightWidth) - (scroller ? 0 : parseFloat(s.paddingRight));
      if (r.right > inner + 1 || box.scrollWidth > box.clientWidth + 1) {
        const head = [...t.querySelectorAll('th')].map(h => h.textContent.trim());
        cut.push({table: t.className || t.id, box: box.className, right: Math.round(r.right),
                  inner: Math.round(inner), scroll: box.scrollWidth, client: box.clientWidth, last: head[head.length - 1]});
      }
      break;
    }
  }
  const out = document.createElement('pre'); out.id = 'probe';
  out.textContent = JSON.stringify({cut, page: document.documentElement.scrollWidth, view: window.innerWidth,
                                    tables: document.querySelectorAll('table').length});
  document.body.appendChild(out);
});
</script>"""


def require() -> str:
    """The Chromium binary; skips the test without one (fails it on CI)."""
    if CHROMIUM is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("no chromium binary on this CI machine (install chromium: the report's layout tests need it)")
        pytest.skip("no chromium binary on this machine")
    return CHROMIUM


def chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [require(), *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120
    )


def probe(page: Path, script: str, width: int, tmp: Path, height: int = 1000) -> dict:
    """Load a copy of ``page`` with ``script`` appended at a window ``width`` px wide; the JSON it wrote
    into ``<pre id="probe">``."""
    copy = tmp / f"probe-{width}-{page.name}"
    copy.write_text(page.read_text(encoding="utf-8").replace("</body>", script + "</body>"), encoding="utf-8")
    res = chromium(
        [f"--window-size={width},{height}", "--virtual-time-budget=10000", "--dump-dom", copy.as_uri()],
        tmp / f"profile-{width}",
    )
    match = re.search(r'<pre id="probe">(.*?)</pre>', res.stdout, re.S)
    assert match, f"no probe output; stderr: {res.stderr[-2000:]}"
    return json.loads(html.unescape(match.group(1)))


def screenshot(page: Path, out: Path, width: int, height: int, tmp: Path) -> Path:
    res = chromium([f"--window-size={width},{height}", f"--screenshot={out}", page.as_uri()], tmp / f"shot-{width}")
    assert out.is_file(), res.stderr[-2000:]
    return out
