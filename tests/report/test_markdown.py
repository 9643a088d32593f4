"""What the report says about itself: its inputs, its contents, its methods, and lines a reader can read."""

from __future__ import annotations

import html as html_lib
import json
import re
import shutil
from pathlib import Path

import pandas as pd

from evalvae.report import write_report
from evalvae.report.markdown import MAX_LINE, _fold, _table
from tests.compare_helpers import base_values, set_level_row, write_run

REPO = Path(__file__).resolve().parents[2]


def robustness_dir(tmp: Path) -> Path:
    d = tmp / "robust"
    d.mkdir()
    shutil.copy(REPO / "reports" / "robustness-kodak" / "robustness.csv", d)
    return d


def latents_dir(tmp: Path) -> Path:
    d = tmp / "lat"
    d.mkdir()
    rows = [
        {"vae": v, "channels": 4, "n_images": 6, "std": s, "scaled_std": s, "clamp_saturated": c, "psnr_drop_0.1": p}
        for v, s, c, p in (("a", 0.9, 0.01, 0.4), ("b", 1.3, 0.0, 0.2))
    ]
    pd.DataFrame(rows).to_csv(d / "latents.csv", index=False)
    return d


def empty_headings(html: str, md: str) -> list[str]:
    """Labels with nothing after them: an HTML ``<strong>X.</strong>`` closing its paragraph, a markdown
    bold label or heading followed by another label, a heading or the end."""
    found = re.findall(r"<strong>[^<]*</strong>\s*</p>", html)
    lines = [line for line in md.splitlines() if line.strip()] + ["## end"]
    label = re.compile(r"^(#+ .*|\*\*[^*]+\*\*)$")
    found += [a for a, b in zip(lines, lines[1:]) if label.match(a) and (label.match(b) or b == "---")]
    return found


def test_a_robustness_report_counts_its_input_and_lists_its_contents(tmp_path):
    robust = robustness_dir(tmp_path)
    html = write_report([robust], tmp_path / "rep").read_text(encoding="utf-8")
    md = (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")
    assert "0 run(s)" not in html and "0 run(s)" not in md
    assert "from 1 robustness run(s)." in md and "· 1 robustness run(s) · 1 section(s)</div>" in html
    overview = html[html.index('<section id="overview"') : html.index("</section>")]
    row = re.search(r'<tr><td class="l"><a href="#robustness-0">Robustness · robust</a></td>(.*?)</tr>', overview)
    assert row and "<td>5</td>" in row.group(1) and "tiled decoding changes taesd3 least" in row.group(1)
    assert 'class="overview"' not in overview  # no evaluation section: no table of means
    assert '<a href="#robustness-0">' in html[: html.index("</nav>")]
    footer = html[html.index('<footer id="methods">') :]
    assert "Methods." not in footer and "re-created" not in footer  # no statistics, no grids to explain
    assert f"<strong>Inputs.</strong> robustness run(s): {robust / 'robustness.csv'}</p>" in footer
    assert empty_headings(html, md) == []


def test_latents_and_robustness_together(tmp_path):
    html = write_report([latents_dir(tmp_path), robustness_dir(tmp_path)], tmp_path / "rep").read_text("utf-8")
    md = (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")
    assert "from 1 latent-diagnostics run(s), 1 robustness run(s)." in md
    assert "- Latent diagnostics · lat (latent diagnostics, 2 VAE(s))" in md
    assert "- Robustness · robust (robustness, 5 VAE(s))" in md
    overview = html_lib.unescape(html.split("</section>")[0])
    assert "a's configured factors fit best (std 0.900)" in overview
    assert empty_headings(html, md) == []


def test_the_markdown_protocol_is_a_list_and_no_line_is_long(tmp_path):
    """The protocol of a real run (metrics=all: long LPIPS, rFID and KID settings) as a short line and a list."""
    protocol = json.loads((REPO / "reports" / "tiny-vaes" / "runs" / "kodak-256" / "metrics.json").read_text())
    v = base_values()
    kid = [set_level_row("a", "kid", 0.01, std=1e-3), set_level_row("b", "kid", 0.02, std=1e-3)]
    rfid = [set_level_row("a", "rfid", 9), set_level_row("b", "rfid", 12)]
    d = write_run(tmp_path / "r", {"a": v, "b": dict(v, psnr=v["psnr"] - 1)}, protocol, extra_summary=kid + rfid)
    html = write_report([d], tmp_path / "rep", grids=False).read_text(encoding="utf-8")
    md = (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")
    longest = max(md.splitlines(), key=len)
    assert len(longest) <= MAX_LINE, longest
    assert "**Protocol.** folder · 24 images listed · 256×256; metrics: PSNR (dB), SSIM, LPIPS, rFID, KID." in md
    details = md[md.index("<details><summary>Protocol details</summary>") : md.index("</details>")]
    assert "\n- resolution: 256×256\n" in details
    assert "\n- **LPIPS**: lpips package v0.1 linear heads, torchvision alex backbone\n  - net=alex\n" in details
    assert "\n  - extractor=inception-v3-fid-clean, resize: PIL bicubic to 299x299 in float" in details
    methods = md[md.index("**Methods.**") :]
    assert "\n- Means are over images with the sample standard deviation (ddof = 1).\n" in methods
    assert "\n**Inputs.**\n\n- run(s):\n  - `" in methods
    assert empty_headings(html, md) == []


def test_a_wide_table_splits_and_keeps_its_key_columns():
    header = ["VAE", "images"] + [f"metric number {i}" for i in range(12)]
    rows = [[f"vae{r}", "24"] + [f"{r}.{i:02d} ± 0.123 [0.111, 0.222]" for i in range(12)] for r in range(3)]
    lines = _table(header, rows, ["l", "r"] + ["r"] * 12, keep=2)
    assert max(map(len, lines)) <= MAX_LINE
    tables = "\n".join(lines).split("\n\n")
    assert len(tables) > 1
    seen = []
    for t in tables:
        head = [c.strip() for c in t.splitlines()[0].strip("|").split("|")]
        assert head[:2] == ["VAE", "images"] and len(t.splitlines()) == 2 + len(rows)
        seen += head[2:]
    assert seen == header[2:]  # every column once, in order


def test_long_prose_wraps_without_turning_into_markup():
    words = " ".join(f"word{i} - {i} # + 1. > |" for i in range(80))
    for prefix, more in (("", ""), ("- ", "  "), ("> ", "> ")):
        lines = _fold([prefix + words + "  "])
        assert len(lines) > 1 and max(map(len, lines)) <= MAX_LINE
        assert lines[0].startswith(prefix) and all(line.startswith(more) for line in lines[1:])
        assert not any(re.match(r"^(?:[-+*#>|]|\d+[.)])(?:\s|$)", line[len(more) :]) for line in lines[1:])
        assert " ".join(line[len(more) :].strip() for line in [lines[0][len(prefix) - len(more) :], *lines[1:]]) == (
            words
        )
        assert lines[-1].endswith("  ")  # a hard break stays a hard break
    table = "| " + " | ".join(["x" * 40] * 10) + " |"
    assert _fold([table]) == [table]
