"""``write_report(run_dirs, out_dir)``: tables, statistics, plots and image grids of one or more runs."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from pathlib import Path

from evalvae.errors import ConfigError, EvalvaeError
from evalvae.io import atomic_write_text
from evalvae.metrics import stats
from evalvae.report import plots, tables, verdict, views
from evalvae.report.bench import bench_sections, overview_speed
from evalvae.report.gallery import build_gallery
from evalvae.report.grids import select_images
from evalvae.report.latents import latent_dirs, latent_sections
from evalvae.report.load import load_inputs
from evalvae.report.regions import region_figures
from evalvae.report.robustness import robustness_sections
from evalvae.report.saved import PSNR_TOLERANCE_DB, saved_settings
from evalvae.report.sections import Section, group_sections
from evalvae.results import write_frame

log = logging.getLogger(__name__)

METHODS = (
    f"Means are over images with the sample standard deviation (ddof = 1). Intervals are {stats.CONFIDENCE:.0%} BCa "
    f"bootstrap confidence intervals of the mean ({stats.N_RESAMPLES:,} resamples, seed {stats.SEED}, scipy.stats.bootstrap). "
    "Paired statistics use the images both VAEs scored: Δ is the mean of per-image differences A − B with its bootstrap "
    "interval; 'A wins' is the share of images on which A is better by the metric's direction (ties count half); "
    "p is the two-sided Wilcoxon signed-rank test (scipy.stats.wilcoxon, zero differences dropped), the test and interval "
    "evalvae compare uses too; p (Holm) adjusts "
    f"p over all pairs of one metric in a section, and a difference is marked significant when p (Holm) < {stats.ALPHA}. "
    "On n differing images the test cannot give p below 2/2^n (0.125 at n = 4, 0.031 at n = 6): where that puts "
    "significance out of reach, 'not significant' says so. "
    "Ties: differences within a metric's tie tolerance (its float noise, with a margin: the same VAE at another batch "
    "size stays within it; recorded in metrics.json) count as 0, per image in wins, Δ, its interval and the test, and "
    "between means in best marks and findings: the best mark goes to the best mean and every mean within that "
    "tolerance of it, and to none where that is every VAE. "
    "Best marks and findings rank the means over the images every VAE scored. "
    "Bits per pixel and region counts are facts, not qualities: never marked best, tested or plotted as a quality. "
    "Set-level metrics (rFID, KID) are one number per VAE over N images and have no per-image interval; KID on N not "
    "above its subset size (every subset is the whole set) is not marked best. "
    "An infinite per-image value (the PSNR of an exact reconstruction is +∞) is kept: the mean of a set holding one is ∞, "
    "with no std or CI; in paired statistics equal infinities tie, and an infinite difference is a win or a loss that ranks "
    "above every finite one in the Wilcoxon test and makes Δ infinite; plots leave infinite values out."
)

GRIDS = (
    "Each picture is a PNG the run saved (samples/ for a reconstruction run, images/ for a text-to-image run): "
    "no VAE is loaded and no dataset read to draw the grids. Each picture's PSNR is recomputed from its saved "
    f"pixels and checked against the run's recorded value (within {PSNR_TOLERANCE_DB} dB; a mismatch is flagged "
    "under the picture). Crops are cut at 1:1 pixels and enlarged by pixel repetition only."
)
# Kinds of input, as the report's header and footer count and list them.
KINDS = {
    "run": "run(s)",
    "latents": "latent-diagnostics run(s)",
    "robustness": "robustness run(s)",
    "bench": "bench file(s)",
}


class NothingToReport(EvalvaeError):
    """No input directory holds usable results."""


def _plots(section: Section, summary, paired, bench, plot_dir: Path) -> list[dict]:
    out = []
    s = section.slug
    many = len(section.metrics) + len(section.set_metrics) > 2  # panels side by side need the full width

    left_out = (
        " Infinite values (∞, see the notes under the results) are left out." if plots.has_infinite(section) else ""
    )

    def add(path, title, caption, wide=False):
        if path is not None:
            out.append({"title": title, "path": path, "caption": caption + left_out, "wide": wide})

    add(
        plots.bars(section, summary, plot_dir / f"{s}-means.png"),
        "Means with 95% CIs",
        "Bars are means over images; whiskers are 95% bootstrap CIs; the outlined bar is the best by the metric's "
        "direction (none where every VAE ties within the metric's tie tolerance).",
        wide=many,
    )
    add(
        plots.distributions(section, plot_dir / f"{s}-per-image.png"),
        "Per-image distributions",
        "Each dot is one image; boxes show the median and quartiles; violins the density.",
        wide=many,
    )
    add(
        plots.paired_forest(section, paired, plot_dir / f"{s}-paired.png"),
        "Paired differences",
        "Mean per-image difference A − B with its 95% bootstrap CI; filled red markers are significant after Holm correction.",
    )
    add(
        plots.rate_distortion(section, summary, plot_dir / f"{s}-rate-distortion.png"),
        "Rate–distortion",
        "Mean quality against mean bits per pixel (bpp: latent elements × bits each for a VAE, the file's size for "
        "a codec), one marker per VAE or codec: at equal bpp, the better marker wins.",
        wide=True,
    )
    points, note = tables.speed_points(section, summary, bench)
    add(
        plots.pareto(section, points, note, plot_dir / f"{s}-pareto.png"),
        "Quality vs speed",
        f"Speed from {note}." if note else "",
    )
    if "category" in section.per_image:
        for m in section.quality_metrics:
            add(
                plots.categories(section, m, plot_dir / f"{s}-categories-{m}.png"),
                f"{m.upper()} by category",
                "Mean per category with 95% bootstrap CIs.",
            )
    return out


def write_report(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    images: Sequence[str] = (),
    worst: int | None = None,
    best: int | None = None,
    grids: bool = True,
) -> Path:
    """Write ``report.html``, ``report.md``, ``plots/``, ``grids/`` and ``tables/`` into ``out_dir``.

    Args:
        run_dirs: run directories, multirun sweep folders (their jobs), folders with ``latents.csv`` (an
            ``evalvae latents`` run: a "Latent diagnostics" section), ``robustness.csv`` (a "Robustness"
            section) or ``bench.csv`` (a "Benchmark" section, its speed also in the overview next to the
            runs' VAEs it measured).
        out_dir: where the report goes (created).
        images: image ids to show in grids (default: the image of median score in each section).
        worst: how many worst images per VAE get a grid (by the first metric with a known direction);
            default: as many as the section's runs saved (``samples.worst``), else 3.
        best: the same for the best images; default: as many as the runs saved (``samples.best``), else 1.
        grids: draw the image grids, from the reconstructions the runs saved (``samples/``, ``images/``);
            no VAE is loaded and no dataset read.

    Returns the path of ``report.html``. Raises :class:`NothingToReport` when no input has results;
    inputs that fail are listed in the report's problems instead.
    """
    for name, value in (("worst", worst), ("best", best)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise ConfigError(name, value, hint="a count of images per VAE (0 for none)")
    inputs = load_inputs(list(run_dirs))
    latents = latent_dirs([*run_dirs, *(r.path for r in inputs.runs)])
    robust, robust_problems = robustness_sections(list(run_dirs))
    if not inputs.runs and not latents and not robust and inputs.bench.empty:
        raise NothingToReport("nothing to report: " + "; ".join(inputs.problems or ["no run directories given"]))
    out = Path(out_dir)
    plot_dir, grid_dir, table_dir = out / "plots", out / "grids", out / "tables"
    for d in (plot_dir, grid_dir, table_dir):
        d.mkdir(parents=True, exist_ok=True)
    problems = list(inputs.problems) + robust_problems
    section_views = []
    sections = group_sections(inputs.runs)
    for section in sections:
        log.info("section %s: %d VAE(s)", section.title, len(section.entries))
        summary = tables.summary_table(section)
        paired = tables.paired_table(section)
        for name, frame in (("summary", summary), ("paired", paired)):
            write_frame(table_dir / f"{section.slug}-{name}.csv", frame)
        figures = _plots(section, summary, paired, inputs.bench, plot_dir)
        region_plots, region_notes = region_figures(section, plot_dir, grids)
        gallery, grid_notes = [], []
        if grids:
            saved = [s for s in (saved_settings(r) for r in section.runs) if s]
            counts = {k: max((int(s.get(k, 0)) for s in saved), default=d) for k, d in (("worst", 3), ("best", 1))}
            k_worst = worst if worst is not None else counts["worst"]
            k_best = best if best is not None else counts["best"]
            specs, grid_notes = select_images(section, list(images), k_worst, k_best)
            gallery, more = build_gallery(section, specs, grid_dir)
            grid_notes += more
        runs = [run for run in section.runs if not run.skipped.empty]
        skipped = [
            (str(f), str(r), run.label) for run in runs for f, r in zip(run.skipped["file"], run.skipped["reason"])
        ]
        view = dict(
            title=section.title, slug=section.slug, recommendation=verdict.recommendation(section, summary, paired)
        )
        view |= dict(notes=section.notes, grid_notes=grid_notes, summary=views.summary_view(section, summary))
        view |= dict(paired=views.paired_view(paired, section), findings=views.findings(section, summary, paired))
        view |= dict(protocol=views.protocol_view(section), plots=figures, regions=region_plots)
        view |= dict(region_notes=region_notes, grids=gallery, skipped=skipped, n_entries=len(section.entries))
        section_views.append(view)
    latent_views, more = latent_sections(latents, plot_dir)
    problems += more
    header, overview = views.overview_rows(section_views)
    speed = overview_speed(sections, inputs.bench)
    for row in overview:
        row["speed"] = speed.cells.get((row["slug"], row["label"])) if speed else None
    benches = bench_sections(inputs.bench, plot_dir)
    used = {"run": [str(r.path) for r in inputs.runs], "latents": [v["source"] for v in latent_views]}
    used |= {"robustness": [r["source"] for r in robust], "bench": [b["source"] for b in benches]}
    context = {
        "generated": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "inputs": {KINDS[k]: paths for k, paths in used.items() if paths},
        "inputs_text": ", ".join(f"{len(paths)} {KINDS[k]}" for k, paths in used.items() if paths),
        "contents": _contents(section_views, latent_views, robust, benches),
        "speed_header": speed.header if speed else [],
        "speed_notes": speed.notes if speed else [],
        "benches": benches,
        "sections": section_views,
        "latents": latent_views,
        "problems": problems,
        "overview_header": header,
        "overview": overview,
        "methods": METHODS if section_views else "",
        "grids_method": GRIDS if any(s["grids"] for s in section_views) else "",
        "robustness": robust,
        "version": _version(),
    }
    from evalvae.report.html import render_html
    from evalvae.report.markdown import render_markdown

    atomic_write_text(out / "report.md", render_markdown(context))
    html = out / "report.html"
    atomic_write_text(html, render_html(context))
    log.info("report in %s (%d section(s), %.1f MB)", html, len(context["contents"]), html.stat().st_size / 1e6)
    return html


def _contents(sections: list[dict], latents: list[dict], robust: list[dict], benches: list[dict]) -> list[dict]:
    """What the report holds: one row per section, with its kind, its number of VAEs and its recommendation."""
    rows = [dict(kind="evaluation", vaes=s["n_entries"], **_row(s)) for s in sections]
    rows += [dict(kind="latent diagnostics", vaes=v["vaes"], **_row(v)) for v in latents]
    rows += [dict(kind="robustness", vaes=r["vaes"], **_row(r)) for r in robust]
    return rows + [dict(kind="benchmark", vaes=b["vaes"], **_row(b)) for b in benches]


def _row(view: dict) -> dict:
    return {k: view[k] for k in ("title", "slug", "recommendation")}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("evalvae")
    except PackageNotFoundError:
        return "dev"
