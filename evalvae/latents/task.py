"""``evalvae latents``: each VAE's latent statistics, suggested factors, spectra and noise sensitivity.

Writes into the run directory: ``latents.csv`` (one row per VAE), ``latents_channels.csv`` (per
VAE and channel), ``latents_noise.csv`` (per VAE and noise level), ``latents_spectra.csv`` (per
VAE, signal and frequency bin), ``latents_histograms.csv`` (per VAE, channel and bin),
``latents.json`` (the protocol), ``vaes.json``, ``timings.csv``, ``config.yaml`` and the plots
under ``plots/``. A VAE that fails to load or run is recorded in ``vaes.json`` and the others go on.
"""

from __future__ import annotations

import json
import logging

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from evalvae.config import instantiate
from evalvae.data import known_len, make_loader
from evalvae.device import resolve_device
from evalvae.io import atomic_write_text
from evalvae.jobs.failures import log_failures
from evalvae.jobs.runtime import RunOutcome, StageTimes, loader_workers, progress_bar
from evalvae.jobs.task import Done, Task
from evalvae.jobs.vaes import selected_vaes
from evalvae.latents import tables
from evalvae.latents.diagnose import STAGES, Options, diagnose
from evalvae.metrics.latentstats import CLAMP
from evalvae.provenance import environment, software
from evalvae.results import Records, write_frame

log = logging.getLogger(__name__)
TABLES = {  # file -> how its rows are made
    "latents_channels.csv": tables.channel_rows,
    "latents_noise.csv": tables.noise_rows,
    "latents_spectra.csv": tables.spectrum_rows,
    "latents_histograms.csv": tables.histogram_rows,
}


def options(cfg: DictConfig) -> Options:
    o = cfg.latents
    return Options(
        noise=tuple(float(k) for k in o.noise),
        seed=int(o.seed),
        histogram_bins=int(o.histogram_bins),
        spectrum_bins=int(o.spectrum_bins),
    )


def protocol(cfg: DictConfig, dataset, opts: Options) -> dict:
    return {
        "task": "latents",
        "dataset": dataset.describe(),
        "images": "8-bit originals centre-cropped to a multiple of each VAE's downsampling factor, encoded with its posterior",
        "statistics": "raw latents (encode's output / scaling_factor + shift_factor); float64 sums; std with ddof=0; "
        "kurtosis is excess (Fisher): m4 / m2^2 - 3 with biased moments, as scipy.stats.kurtosis defaults",
        "suggested_factors": "scaling_factor = 1 / std and shift_factor = mean over every element of the raw latents",
        "clamp": f"share of the latents encode returns with |z| > {CLAMP:g}: TAESD's decoder soft clamp 3*tanh(z/3) "
        "(diffusers DecoderTiny) and AutoencoderTiny.scale_latents' hard clamp to +-latent_magnitude=3",
        "spectrum": f"radially averaged |FFT2|^2 of each channel map (mean removed), {opts.spectrum_bins} bins of radial "
        "frequency / Nyquist of its own grid, averaged over maps, normalised to sum 1; images in [0, 1] per RGB channel; "
        "spectrum_high_*: share of power above half Nyquist",
        "noise": {
            "relative_std": list(opts.noise),
            "definition": "z + k * std(z_i) * eps_i, eps_i ~ N(0, 1) seeded with seed + image index; psnr_drop = mean "
            "over images of PSNR(clean decode) - PSNR(noisy decode), 8-bit pixels",
            "seed": opts.seed,
        },
        "histogram_bins": opts.histogram_bins,
        "histogram_edges": "per channel, from the first batch: its min to max widened by half the span on each side",
    }


class LatentsTask(Task):
    """``evalvae latents``: every selected VAE over the dataset (:func:`evalvae.latents.diagnose.diagnose`)."""

    name = "latents"
    stages = STAGES

    def check(self, name: str, vae) -> None:
        self.dataset.geometry.check_factor(vae.downsample, f"VAE '{name}'")

    def run(self) -> RunOutcome:
        cfg, out = self.cfg, self.out
        specs = selected_vaes(cfg)
        self.device = device = resolve_device(cfg.device)
        batch_size = cfg.batch_size
        workers = loader_workers(cfg.workers)
        opts = options(cfg)
        self.dataset = dataset = instantiate(cfg.dataset)
        out.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, out / "config.yaml", resolve=True)
        described = {**protocol(cfg, dataset, opts), "software": software(), "environment": environment(device)}
        atomic_write_text(out / "latents.json", json.dumps(described, indent=2) + "\n")
        records = Records(out)
        rows, more = [], {f: [] for f in TABLES}

        def one(name: str, spec) -> Done:
            loaded = self.load(name, spec)
            vae, times = loaded.vae, StageTimes(device)
            loader = make_loader(dataset, batch_size, workers, device)
            with progress_bar(cfg.progress, known_len(dataset), name) as bar:
                d = diagnose(vae, _counting(loader, bar), opts, times)
            if d.n_images == 0:
                raise RuntimeError(f"no image of the dataset could be read ({len(d.skipped)} skipped)")
            if d.skipped:
                log.warning(
                    "VAE '%s': %d image(s) skipped, e.g. %s",
                    name,
                    len(d.skipped),
                    "; ".join(f"{f}: {why}" for f, why in d.skipped[:3]),
                )
            row = tables.summary_row(name, vae, d)
            rows.append(row)
            for f, make in TABLES.items():
                more[f] += make(name, d)
            records.add_vae({**vae.describe(), "status": "ok"})
            log.info(
                "%s: %d images; raw latents' std %.4g: scaling_factor 1/std = %.4g (configured %.4g); mean %.4g = "
                "shift_factor (configured %.4g); |z| > 3: %.4f%%",
                name,
                d.n_images,
                row["std"],
                row["suggested_scaling_factor"],
                row["scaling_factor"],
                row["mean"],
                row["shift_factor"],
                100 * row["clamp_saturated"],
            )
            return Done(vae.dtype_name, d.n_images, loaded.load_s, times)

        failed = self.each_vae(specs, one, records, flush=False)
        summary = pd.DataFrame(rows)
        write_frame(out / "latents.csv", summary)
        for f, frame_rows in more.items():
            write_frame(out / f, pd.DataFrame(frame_rows))
        records.flush()
        if cfg.latents.plots and rows:
            from evalvae.latents.plots import write_plots

            write_plots(out)
        log_failures(failed, len(specs))
        log.info("results in %s", out)
        return RunOutcome(out, summary, failed)


def _counting(loader, bar):
    for batch in loader:
        bar.update(batch.n_images + len(batch.skipped))
        yield batch
