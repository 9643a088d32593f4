"""The line opening each report section: a recommendation read from the best marks and paired tests."""

from __future__ import annotations

import html as html_lib

import numpy as np
import pandas as pd
import pytest

from evalvae.report import tables, write_report
from evalvae.report.load import load_inputs
from evalvae.report.sections import group_sections
from evalvae.report.verdict import latents_recommendation, recommendation, robustness_recommendation
from tests.compare_helpers import base_values, write_run


def better(v: dict, by: float) -> dict:
    """Every quality better by about ``by`` (dB of PSNR; SSIM and LPIPS in proportion) on every image, by a
    different amount on each (tied differences would send scipy's Wilcoxon to its slow permutation test)."""
    k = by * np.linspace(0.5, 1.5, v["psnr"].size)
    return dict(v, psnr=v["psnr"] + k, ssim=np.minimum(v["ssim"] + 0.01 * k, 1.0), lpips=v["lpips"] * 0.8**k)


def verdict_of(path) -> str:
    (section,) = group_sections(load_inputs([path]).runs)
    return recommendation(section, tables.summary_table(section), tables.paired_table(section))


def rfid(vae: str, mean: float) -> dict:
    return {"vae": vae, "metric": "rfid", "mean": mean, "std": np.nan, "n": 12, "note": ""}


def test_a_clear_winner_is_named_with_the_metrics_and_the_test(tmp_path):
    v = base_values()
    runs = {"big": dict(better(v, 3.0), bpp=np.full(12, 2.0)), "small": dict(v, bpp=np.full(12, 0.25))}
    runs["worse"] = dict(better(v, -1.0), bpp=np.full(12, 0.5))
    d = write_run(tmp_path / "r", runs, extra_summary=[rfid("big", 10.0), rfid("small", 30.0), rfid("worse", 40.0)])
    assert verdict_of(d) == (
        "big is best on every quality metric (PSNR, SSIM, LPIPS, rFID); significantly ahead of every other VAE "
        "on PSNR, SSIM, LPIPS (paired test, Holm); rFID untested (one value per VAE); "
        "small uses 8× fewer bits per pixel than big (0.250 vs 2.000 bpp)."
    )


def test_a_split_names_who_is_best_on_what(tmp_path):
    v = base_values()
    sharp = dict(better(v, 2.0), lpips=v["lpips"] * 1.5)  # better PSNR and SSIM, worse LPIPS
    d = write_run(tmp_path / "r", {"sharp": sharp, "soft": v})
    text = verdict_of(d)
    assert text.startswith("No single best VAE: sharp is best on PSNR, SSIM; soft on LPIPS;"), text
    assert "significantly ahead of every other VAE on PSNR, SSIM, LPIPS" in text


def test_a_single_vae_is_described_not_recommended(tmp_path):
    v = base_values()
    d = write_run(tmp_path / "r", {"only": v}, extra_summary=[rfid("only", 12.5)])
    text = verdict_of(d)
    assert text == (
        f"One VAE, so nothing to recommend: only scores PSNR {v['psnr'].mean():.2f} dB, SSIM {v['ssim'].mean():.4f}, "
        f"LPIPS {v['lpips'].mean():.4f}, rFID 12.50 (means over 12 images)."
    )
    assert "best" not in text


@pytest.mark.parametrize(
    "v, expected",
    [
        (base_values(), "No clear winner: the VAEs tie on every quality metric (PSNR, SSIM, LPIPS)."),
        # a section whose values are all unavailable ranks nothing and says so
        ({k: np.full(12, np.nan) for k in base_values()}, "No VAE is ranked on PSNR, SSIM, LPIPS."),
    ],
    ids=["identical", "no-values"],
)
def test_identical_vaes_tie_and_vaes_without_values_are_not_ranked(tmp_path, v, expected):
    d = write_run(tmp_path / "r", {"a": v, "b": {k: x.copy() for k, x in v.items()}})
    assert verdict_of(d) == expected


def test_a_lead_no_test_can_confirm_is_no_clear_winner(tmp_path):
    v = base_values(4)
    swing = np.array([1.0, -0.9, 1.0, -0.9])  # better on average, worse on half the images
    a = dict(psnr=v["psnr"] + swing, ssim=v["ssim"] + 0.01 * swing, lpips=v["lpips"] - 0.01 * swing)
    d = write_run(tmp_path / "r", {"a": a, "b": v})
    assert verdict_of(d) == (
        "No clear winner: a has the best mean on every quality metric (PSNR, SSIM, LPIPS); "
        "on PSNR, SSIM, LPIPS not significantly ahead of b (paired test, Holm)."
    )


def test_failed_vaes_and_metrics_without_direction_are_named(tmp_path):
    v = base_values()
    d = write_run(
        tmp_path / "r",
        {"a": dict(better(v, 3.0), sharpness=v["psnr"]), "b": dict(v, sharpness=v["psnr"] + np.linspace(0.5, 1.5, 12))},
        vaes=[
            {"vae": "a", "status": "ok"},
            {"vae": "b", "status": "ok"},
            {"vae": "c", "status": "failed", "error": "CUDA out of memory"},
        ],
    )
    text = verdict_of(d)
    assert text.startswith("a is best on every quality metric (PSNR, SSIM, LPIPS)"), text
    assert text.endswith("; sharpness has no direction and is not judged; c failed and is not ranked.")


def test_a_best_mark_the_table_withholds_is_not_a_win(tmp_path):
    """The recommendation follows the summary's best marks: a metric left unmarked is named as not ranked."""
    v = base_values()
    d = write_run(tmp_path / "r", {"a": better(v, 3.0), "b": v}, extra_summary=[rfid("a", 10.0), rfid("b", 30.0)])
    (section,) = group_sections(load_inputs([d]).runs)
    summary = tables.summary_table(section)
    summary.loc[summary["metric"] == "rfid", "best"] = False
    text = recommendation(section, summary, tables.paired_table(section))
    assert "every ranked quality metric (PSNR, SSIM, LPIPS)" in text and "rFID not ranked (see the notes)" in text


def test_the_report_opens_each_section_with_it(tmp_path):
    v = base_values()
    d = write_run(tmp_path / "r", {"big": better(v, 3.0), "small": v})
    html = write_report([d], tmp_path / "rep", grids=False).read_text(encoding="utf-8")
    md = (tmp_path / "rep" / "report.md").read_text(encoding="utf-8").splitlines()
    at = md.index("## kodak · 256×256")
    assert md[at + 2].startswith("**Recommendation.** big is best on every quality metric (PSNR, SSIM, LPIPS)")
    line = md[at + 2].removeprefix("**Recommendation.** ")
    section = html[html.index('<section id="kodak-256x256">') :]
    assert section.index(html_lib.escape(line)) < section.index("Results · mean")


def latent_row(vae: str, scaled_std: float, clamp: float, drop: float) -> dict:
    return {
        "vae": vae,
        "channels": 4,
        "n_images": 6,
        "std": scaled_std,
        "suggested_scaling_factor": 1 / scaled_std,
        "scaling_factor": 1.0,
        "scaled_std": scaled_std,
        "clamp_saturated": clamp,
        "psnr_drop_0.01": drop / 10,
        "psnr_drop_0.1": drop,
    }


def test_latent_diagnostics_name_the_best_fit_the_clamp_and_the_noise_sensitivity():
    frame = pd.DataFrame([latent_row("a", 0.98, 0.001, 0.3), latent_row("b", 0.70, 0.02, 0.5)])
    frame = pd.concat([frame, pd.DataFrame([latent_row("c", 1.25, 0.0, 0.2)])], ignore_index=True)
    assert latents_recommendation(frame) == (
        "Based on the std after the configured factors (1 fits), |z| > 3 and the PSNR drop at σ = 0.1 × std: "
        "a's configured factors fit best (std 0.980); b's worst (0.700, suggested scaling_factor 1.429); "
        "b saturates TAESD's clamp most (2.000% of |z| > 3); c's decoder is least sensitive to latent noise (0.200 dB)."
    )
    assert latents_recommendation(frame.iloc[:1]) == (
        "One VAE, so nothing to compare: a's std after its configured factors is 0.980 (suggested scaling_factor "
        "1.02); 0.100% of |z| > 3; PSNR drop 0.300 dB at σ = 0.1 × std."
    )


def robust_rows(vae: str, tiled: float, bf16: float, nonfinite: int, res: dict[int, float]) -> list[dict]:
    rows = [
        {"vae": vae, "check": "tiled", "setting": "tile=128", "metric": "psnr", "value": tiled},
        {"vae": vae, "check": "precision", "setting": "bf16", "metric": "psnr", "value": bf16},
        {"vae": vae, "check": "precision", "setting": "bf16", "metric": "nonfinite_images", "value": nonfinite},
    ]
    return rows + [
        {"vae": vae, "check": "resolution", "setting": str(r), "metric": "psnr", "value": v} for r, v in res.items()
    ]


def test_robustness_names_the_steadiest_vae_per_check_and_non_finite_outputs():
    df = pd.DataFrame(
        robust_rows("a", 50.0, 40.0, 0, {256: 30.0, 512: 32.0})
        + robust_rows("b", 45.0, np.inf, 2, {256: 31.0, 512: 31.0})
    )
    assert robustness_recommendation(df) == (
        "Based on PSNR against each VAE's own plain fp32 output (tiled, precision) and against the originals "
        "(resolution sweep): tiled decoding changes a least (50.00 dB from untiled); b stays closest to fp32 (∞ dB); "
        "best PSNR against the originals: b at 256 px, a at 512 px; b gives non-finite outputs (precision bf16)."
    )
    df.loc[df["check"] == "precision", "value"] = np.nan  # not run
    one = df[df["vae"] == "a"]
    assert robustness_recommendation(one) == (
        "One VAE, so nothing to compare: a: its tiled decode is 50.00 dB from its untiled one (tile=128); "
        "reduced precision not measured (see the notes); PSNR 30.00, 32.00 dB at 256 and 512 px."
    )
