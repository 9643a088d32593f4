"""Latent statistics against numpy/scipy on known tensors, batch-size invariance, spectra and noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from evalvae.metrics.latentstats import (
    CLAMP,
    Histograms,
    Moments,
    Spectrum,
    add_latent_noise,
    radial_bins,
    saturated_counts,
    suggested_factors,
)


def _latents(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(12, 3, 8, 10, generator=g, dtype=torch.float64)
    z[:, 0] = z[:, 0] * 5 + 40  # a large offset: the shifted sums must keep its fourth moment exact
    z[:, 1] = torch.exp(z[:, 1])  # skewed, heavy tailed
    z[:, 2] = z[:, 2] * 0.5 - 1
    return z


def _streamed(z: torch.Tensor, batch: int) -> dict:
    m = Moments(z.shape[1])
    for part in z.split(batch):
        m.update(part)
    return m.stats()


def test_moments_equal_numpy_and_scipy_in_batches_of_any_size():
    z = _latents()
    got = _streamed(z, 5)
    saturated = sum(saturated_counts(part) for part in z.split(5))
    per = z.transpose(0, 1).flatten(1).numpy()
    everything = z.flatten().numpy()
    for c, values in enumerate([*per, everything]):
        assert got["mean"][c] == pytest.approx(values.mean(), rel=1e-12, abs=1e-12)
        assert got["std"][c] == pytest.approx(values.std(ddof=0), rel=1e-10)
        assert got["min"][c] == values.min() and got["max"][c] == values.max()
        # excess (Fisher) kurtosis with biased moments: scipy's defaults
        assert got["kurtosis"][c] == pytest.approx(stats.kurtosis(values, fisher=True, bias=True), rel=1e-8, abs=1e-9)
        assert saturated[c] == (np.abs(values) > CLAMP).sum()
    assert got["kurtosis"][1] > 3  # the log-normal channel is heavy tailed, so the check has teeth
    assert 0 < saturated[-1] < z.numel()
    one, whole = _streamed(z, 1), _streamed(z, 12)  # the batch size does not matter
    for key in got:
        np.testing.assert_allclose(one[key], whole[key], rtol=1e-10, atol=1e-12)


def test_suggested_scaling_of_gaussian_latents_with_std_5():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(64, 4, 16, 16, generator=g) * 5 + 0.7
    m = Moments(4)
    m.update(z)
    s = m.stats()
    factors = suggested_factors(s["mean"][-1], s["std"][-1])
    # 65,536 samples: the std is within 4 standard errors (0.3% each) of 5, the mean within 4 (0.02 each) of 0.7
    assert factors["scaling_factor"] == pytest.approx(0.2, rel=0.012)
    assert factors["shift_factor"] == pytest.approx(0.7, abs=4 * 5 / 256)
    assert factors["shift_factor"] == pytest.approx(z.double().mean().item(), abs=1e-12)
    assert abs(s["kurtosis"][-1]) < 0.05


def test_histograms_count_every_value():
    z = _latents()
    h = Histograms(20)
    for part in z.split(4):
        h.update(part)
    per = z.transpose(0, 1).flatten(1).numpy()
    for c in range(3):
        assert h.counts[c].sum() + h.below[c] + h.above[c] == per[c].size
        inside = per[c][(per[c] >= h.edges[c, 0]) & (per[c] <= h.edges[c, -1])]
        np.testing.assert_array_equal(h.counts[c], np.histogram(inside, h.edges[c])[0])


def test_radial_bins_and_spectrum_of_known_signals():
    idx = radial_bins(16, 16, 8)
    assert idx[0, 0] == -1 and idx[8, 8] == -1  # DC, and the corner beyond Nyquist
    assert idx[0, 8] == 7 and idx[0, 1] == 0  # Nyquist on an axis is the last bin; the lowest frequency the first
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    low = torch.cos(2 * torch.pi * xx / 32)  # 1 cycle: 1/16 of Nyquist
    high = torch.cos(2 * torch.pi * 12 * xx / 32)  # 12 cycles: 0.75 of Nyquist
    s = Spectrum(8)
    s.update(low.view(1, 1, 32, 32))
    assert s.profile().argmax() == 0 and s.high_share() == pytest.approx(0.0, abs=1e-12)
    s = Spectrum(8)
    s.update(high.view(1, 1, 32, 32))
    assert s.profile().argmax() == 5 and s.high_share() == pytest.approx(1.0)  # 0.75 closes bin (0.625, 0.75]
    # white noise: flat density, and the share of power above half Nyquist is the share of frequencies there
    g = torch.Generator().manual_seed(0)
    s = Spectrum(8)
    s.update(torch.randn(64, 1, 32, 32, generator=g, dtype=torch.float64))
    np.testing.assert_allclose(s.profile(), np.full(8, 1 / 8), rtol=0.1)
    s8 = Spectrum(16)
    s8.update(torch.randn(4, 2, 8, 8, generator=g, dtype=torch.float64))  # 8x8: fewer radii than 16 bins
    profile = s8.profile()
    assert np.isnan(profile).any() and np.nansum(profile) == pytest.approx(1.0)
    r = radial_bins(32, 32, 8)
    assert s.high_share() == pytest.approx(float((r >= 4).sum() / (r >= 0).sum()), rel=0.05)


def test_latent_noise_is_seeded_per_image_and_scaled_by_its_std():
    z = _latents().float()
    noisy = add_latent_noise(z, 0.1, list(range(12)))
    alone = add_latent_noise(z[5:6], 0.1, [5])
    torch.testing.assert_close(noisy[5:6], alone)  # the same image gets the same noise in any batch
    ratio = (noisy - z).flatten(1).std(1) / z.flatten(1).std(1, correction=0)
    assert ratio.mean().item() == pytest.approx(0.1, rel=0.1)
