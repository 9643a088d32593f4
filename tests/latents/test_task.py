"""``evalvae latents`` end to end with stand-ins: the tables, plots, suggested factors and failures."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.stats import norm

from evalvae.report import write_report
from evalvae.run import run
from tests.helpers import compose_run, evalvae_main

GAUSS = "tests.latent_standins.GaussianLatents"
IDENTITY = "tests.run_standins.Identity"


def overrides(image_dir, *extra):
    return [
        f"+vae.g._target_={GAUSS}",
        "+vae.g.std=5.0",
        "+vae.g.mean=0.3",
        f"+vae.id._target_={IDENTITY}",
        "+vae.id.gain=0.9",
        "dataset=folder",
        f"dataset.path={image_dir}",
        "dataset.resolution=64",
        "workers=0",
        *extra,
    ]


def test_latents_tables_and_suggested_factors(tmp_path, image_dir):
    outcome = run(compose_run(overrides(image_dir, "batch_size=4"), "latents"), out_dir=tmp_path / "a")
    out = tmp_path / "a"
    assert not outcome.failed
    for f in ("latents.csv", "latents_channels.csv", "latents_noise.csv", "latents_spectra.csv", "latents.json"):
        assert (out / f).is_file(), f
    for png in ("latents_hist_g.png", "latents_hist_id.png", "latents_spectrum.png", "latents_noise.png"):
        assert Image.open(out / "plots" / png).size[0] > 100
    summary = pd.read_csv(out / "latents.csv").set_index("vae")
    g = summary.loc["g"]
    # 6 images x 16 channels x 8 x 8 = 6,144 Gaussian elements of std 5: the std within 4 standard errors (0.9% each)
    assert g["n_elements"] == 6 * 16 * 64 and g["n_images"] == 6
    assert g["suggested_scaling_factor"] == pytest.approx(0.2, rel=0.036)
    assert g["suggested_shift_factor"] == pytest.approx(0.3, abs=4 * 5 / np.sqrt(6144))
    assert g["scaling_factor"] == 1.0 and g["shift_factor"] == 0.0
    expected = norm.sf(3, 0.3, 5) + norm.cdf(-3, 0.3, 5)  # P(|N(0.3, 5²)| > 3) = 0.549
    assert g["clamp_saturated"] == pytest.approx(expected, abs=4 * np.sqrt(expected * (1 - expected) / 6144))
    assert abs(g["kurtosis"]) < 0.3
    # the identity stand-in's raw latents are the model input: images in [-1, 1], space-to-depth
    images = np.stack([np.asarray(Image.open(p).convert("RGB").resize((64, 64))) for p in sorted(image_dir.iterdir())])
    ident = summary.loc["id"]
    assert ident["channels"] == 192 and ident["n_elements"] == images.size
    assert ident["min"] >= -1 and ident["max"] <= 1 and 0.1 < ident["std"] < 1
    assert ident["clamp_saturated"] == 0
    noise = pd.read_csv(out / "latents_noise.csv")
    drops = noise[noise.vae == "id"].sort_values("noise_rel_std")["psnr_drop"].to_numpy()
    assert list(noise[noise.vae == "id"].noise_rel_std) == [0.01, 0.05, 0.1]
    assert (np.diff(drops) > 0).all() and drops[0] > 0  # more latent noise, more PSNR lost
    assert ident["psnr_drop_0.1"] == pytest.approx(drops[-1])
    channels = pd.read_csv(out / "latents_channels.csv")
    assert len(channels[channels.vae == "g"]) == 16 and len(channels[channels.vae == "id"]) == 192
    spectra = pd.read_csv(out / "latents_spectra.csv")
    sums = spectra.groupby(["vae", "signal"])["power"].sum()  # NaN bins (none of the 8x8 grid's radii) skipped
    np.testing.assert_allclose(sums.to_numpy(), 1.0, rtol=1e-9)
    # white-noise latents put about half their power above half Nyquist; photos far less
    assert 0.4 < g["spectrum_high_latent"] < 0.9 and g["spectrum_high_image"] < g["spectrum_high_latent"]
    vaes = json.loads((out / "vaes.json").read_text())
    assert [v["status"] for v in vaes] == ["ok", "ok"]

    # the report reads the files only: a "Latent diagnostics" section with the table and the run's plots
    html = write_report([out], tmp_path / "report")
    text = html.read_text()
    assert "Latent diagnostics" in text and f"{g['suggested_scaling_factor']:.4g}" in text
    assert text.count("data:image/png;base64,") == 4  # spectrum, noise and the two VAEs' histograms
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| g | 16 | 6 |" in md and "PSNR drop, σ = 0.1 × std" in md

    # the same images in batches of one: every statistic agrees
    run(compose_run(overrides(image_dir, "batch_size=1", "latents.plots=false"), "latents"), out_dir=tmp_path / "b")
    other = pd.read_csv(tmp_path / "b" / "latents.csv").set_index("vae")
    numeric = summary.select_dtypes("number").columns
    np.testing.assert_allclose(other[numeric].to_numpy(float), summary[numeric].to_numpy(float), rtol=1e-9, atol=1e-12)


def test_latents_cli_records_a_failed_vae_and_goes_on(tmp_path, image_dir):
    proc = evalvae_main(
        [
            "latents",
            f"+vae.g._target_={GAUSS}",
            f"+vae.bad._target_={IDENTITY}",
            "+vae.bad.fail_at=0",
            "dataset=folder",
            f"dataset.path={image_dir}",
            "dataset.resolution=32",
            "workers=0",
            "latents.noise=[0.05]",
            f"hydra.run.dir={tmp_path / 'cli'}",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 3, proc.stderr[-2000:]  # incomplete: a VAE failed
    out = tmp_path / "cli"
    summary = pd.read_csv(out / "latents.csv")
    assert list(summary.vae) == ["g"] and "psnr_drop_0.05" in summary.columns
    vaes = {v["vae"]: v for v in json.loads((out / "vaes.json").read_text())}
    assert vaes["bad"]["status"] == "failed" and "stand-in decoder failure" in vaes["bad"]["error"]


def test_latents_config_validates_and_bad_values_and_misspellings_are_named():
    from evalvae.config import compose
    from evalvae.errors import ConfigError
    from evalvae.jobs.overrides import check_overrides
    from evalvae.jobs.schema import validate

    validate(compose(["+vae=[taesd,taef2]"], "latents"), "latents")
    with pytest.raises(ConfigError, match=r"latents.spectrum_bins.*1"):
        validate(compose(["+vae=taesd", "latents.spectrum_bins=1"], "latents"), "latents")
    with pytest.raises(ConfigError, match=r"latents.noise.*-1"):
        validate(compose([f"+vae.g._target_={GAUSS}", "latents.noise=[0.1,-1]"], "latents"), "latents")
    with pytest.raises(ConfigError, match="did you mean latents.noise"):
        check_overrides(["latents.nosie=[0.1]"], "latents")
