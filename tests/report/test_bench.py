"""``evalvae report`` with bench results: a bench alone is reported, and a bench beside runs joins their overview."""

from __future__ import annotations

import html as html_lib
import re

import numpy as np
from PIL import Image

from evalvae.report import write_report
from evalvae.report.cli import main
from tests.compare_helpers import base_values, bench_row, write_bench, write_run


def bench_dir(path, rows):
    """A bench output folder as ``evalvae bench`` writes it: bench.csv and its plots."""
    write_bench(path, rows)
    for name in ("bench_time_b1.png", "bench_memory_b1.png"):
        Image.fromarray(np.full((40, 60, 3), 200, np.uint8)).save(path / name)
    return path


def config(vae, op, res, median, **kw):
    return bench_row(vae, op, median, iqr=0.1, resolution=res, dtype="fp32", mode="plain", device="cpu", **kw)


ROWS = [
    config("taef2", "decode", 256, 2.0, peak_mem_mb=60.0),
    config("taef2", "encode", 256, 1.5, peak_mem_mb=55.0),
    config("taef2", "decode", 512, 6.0, peak_mem_mb=210.0),
    config("big", "decode", 256, 9.0, peak_mem_mb=600.0),
    config("big", "decode", 512, np.nan, peak_mem_mb=np.nan, status="oom"),
]


def test_a_bench_alone_is_reported(tmp_path, capsys):
    b = bench_dir(tmp_path / "bench", ROWS)
    main([str(b), "--out", str(tmp_path / "rep")])  # before, "nothing to report: no run directories given"
    assert capsys.readouterr().out.strip() == str(tmp_path / "rep" / "report.html")
    md = (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")
    html = (tmp_path / "rep" / "report.html").read_text(encoding="utf-8")
    assert "from 1 bench file(s)." in md and "## Benchmark · bench" in md
    assert (
        "**Recommendation.** Based on the median decode time per image and its peak memory (fastest passing untiled "
        "configuration per VAE): fastest: taef2 at every resolution (256 and 512 px); least memory: taef2 at every "
        "resolution (256 and 512 px); big ran out of memory at 512 px." in md
    )
    assert "| taef2 | 256 | 1 | fp32 | plain | 1.50 | 2.00 | 60 |" in md  # encode and decode, the larger peak
    assert "| big | 512 | 1 | fp32 | plain | – | oom | – |" in md
    assert "> big: oom for decode at 512 px, fp32, plain, batch 1, cpu" in md
    section = html[html.index('<section id="bench-0">') :]
    assert section.count("data:image/png;base64,") == 2  # the bench's time and memory plots
    assert "Speed from the bench" not in md  # no runs: nothing to merge into


def test_a_bench_beside_a_run_joins_the_overview_where_the_vaes_match(tmp_path):
    v = base_values()
    run = write_run(tmp_path / "run", {"taef2": v, "taesd": dict(v, psnr=v["psnr"] - 1), "taesd3": v})
    rows = [*ROWS, config("other", "decode", 256, 1.0)]
    html = write_report([run, bench_dir(tmp_path / "bench", rows)], tmp_path / "rep", grids=False)
    html = html.read_text(encoding="utf-8")
    md = (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")
    overview = html_lib.unescape(html[html.index('<section id="overview"') : html.index("</section>")])
    assert "<th>decode ms/image (bench)</th><th>peak MiB (bench)</th>" in overview
    row = re.search(r'<td class="l vae">taef2</td>.*?</tr>', overview, re.S).group(0)
    assert '<td title="decode at 256 px, fp32, plain, batch 1, cpu">2.00' in row and "<td>60</td>" in row
    for vae in ("taesd", "taesd3"):
        row = re.search(rf'<td class="l vae">{vae}</td>.*?</tr>', overview, re.S).group(0)
        assert row.endswith('<td class="na">–</td><td class="na">–</td></tr>')
    said = [
        "bench has no rows for taesd and taesd3",
        "bench rows for big and other not shown: no run here evaluated them",
        "bench rows at 512 px not shown: no section here is at that size",
        "bench encode rows not shown here (the overview shows decode; all are in the bench section)",
        "1 bench row(s) that did not pass are not used (1 oom)",
    ]
    for note in said:
        assert f"<li>{note}</li>" in overview and f"- {note}\n" in md
    assert "| kodak · 256×256 | taef2 | 2.00 | 60 | decode at 256 px, fp32, plain, batch 1, cpu |" in md
    assert "## Benchmark · bench" in md  # and the whole bench in its own section


def test_the_bench_recommendation_names_a_split_and_a_single_vae():
    import pandas as pd

    from evalvae.report.bench import bench_recommendation

    df = pd.DataFrame([*ROWS[:4], config("big", "decode", 512, 5.0, peak_mem_mb=900.0)])
    assert bench_recommendation(df).endswith(
        "fastest: taef2 at 256 px; big at 512 px; least memory: taef2 at every resolution (256 and 512 px)."
    )
    assert bench_recommendation(df[df["vae"] == "taef2"]) == (
        "One VAE, so nothing to compare: taef2 takes 2.00 ms at 256 px (60 MiB), 6.00 ms at 512 px (210 MiB) "
        "to decode an image."
    )
