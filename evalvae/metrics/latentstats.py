"""Statistics of a VAE's latents, streamed over batches: moments, histograms, power spectra, noise.

Everything here takes tensors and returns arrays or numbers; nothing does I/O. Sums are float64 and
shifted by the first batch's mean (so fourth powers of large latents lose no precision), which
makes every moment independent of how the images were batched up to float64 rounding.

* Moments: mean, population std (ddof = 0), min, max and **excess** (Fisher) kurtosis
  ``m4 / m2² − 3`` with biased central moments, as ``scipy.stats.kurtosis(fisher=True, bias=True)``
  (a Gaussian gives 0), per channel and over all elements.
* Suggested factors: ``scaling_factor = 1 / std`` and ``shift_factor = mean`` over every element
  of the raw (unscaled) latents: how SD's 0.18215 was derived (1 / std of SD-VAE latents) and how
  SD3 and FLUX pair a shift with it (``latent = (z − shift) × scale``, unit variance, zero mean).
* Clamp saturation: the share of latents with ``|z| > 3``. TAESD's decoders start with the soft
  clamp ``3·tanh(z / 3)`` (diffusers ``DecoderTiny``; madebyollin/taesd's ``Clamp``), and
  ``AutoencoderTiny.scale_latents`` hard-clamps to ``±latent_magnitude = 3`` to store latents as
  8-bit images; beyond 3 the soft clamp has compressed values by more than 24 % (tanh(1) = 0.76).
* Radially averaged power spectrum of each channel's map (its mean removed), binned by radial
  frequency as a fraction of the Nyquist frequency (0.5 cycles per sample) of its own grid, so a
  latent and an image spectrum share one axis; each spectrum is normalised to sum to 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

CLAMP = 3.0  # TAESD's latent magnitude: 3·tanh(z / 3) in the decoder, ±3 in AutoencoderTiny.scale_latents


def _sums(d: torch.Tensor, dims) -> list[np.ndarray]:
    d2 = d * d
    return [t.sum(dims).cpu().numpy() for t in (d, d2, d2 * d, d2 * d2)]


@dataclass
class Moments:
    """Streamed per-channel and overall moments of ``(N, C, H, W)`` tensors."""

    channels: int
    n: int = 0
    shift: np.ndarray | None = None  # (C,) per channel, then the overall shift last
    sums: np.ndarray | None = None  # (C + 1, 4): shifted power sums 1..4 per channel, then overall
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None

    def update(self, z: torch.Tensor) -> None:
        x = z.detach().double()
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"latents of shape {tuple(x.shape)}: expected (N, {self.channels}, H, W)")
        if self.shift is None:
            per = x.mean((0, 2, 3)).cpu().numpy()
            self.shift = np.append(per, x.mean().item())
            self.sums = np.zeros((self.channels + 1, 4))
            self.lo = np.full(self.channels + 1, np.inf)
            self.hi = np.full(self.channels + 1, -np.inf)
        shift = torch.from_numpy(self.shift[:-1]).to(x.device).view(1, -1, 1, 1)
        per = _sums(x - shift, (0, 2, 3))
        whole = _sums(x - float(self.shift[-1]), (0, 1, 2, 3))
        self.sums += np.stack([np.append(p, w) for p, w in zip(per, whole)], axis=1)
        self.lo = np.minimum(self.lo, np.append(x.amin((0, 2, 3)).cpu().numpy(), x.min().item()))
        self.hi = np.maximum(self.hi, np.append(x.amax((0, 2, 3)).cpu().numpy(), x.max().item()))
        self.n += x.shape[0] * x.shape[2] * x.shape[3]  # elements per channel

    def stats(self) -> dict[str, np.ndarray]:
        """``(C + 1,)`` arrays (the channels, then all elements): mean, std, min, max, kurtosis."""
        if self.n == 0:
            raise ValueError("no latents were added")
        counts = np.append(np.full(self.channels, float(self.n)), float(self.n * self.channels))
        s1, s2, s3, s4 = (self.sums[:, k] / counts for k in range(4))
        m = s1
        m2 = s2 - m * m
        m4 = s4 - 4 * m * s3 + 6 * m * m * s2 - 3 * m**4
        with np.errstate(divide="ignore", invalid="ignore"):
            kurt = np.where(m2 > 0, m4 / (m2 * m2) - 3.0, np.nan)
        return {
            "mean": self.shift + m,
            "std": np.sqrt(np.maximum(m2, 0.0)),
            "min": self.lo.copy(),
            "max": self.hi.copy(),
            "kurtosis": kurt,
        }


def saturated_counts(z: torch.Tensor, threshold: float = CLAMP) -> np.ndarray:
    """``(C + 1,)``: per channel, then over all channels, how many elements of ``(N, C, H, W)`` have ``|z| > threshold``."""
    over = (z.detach().abs() > threshold).sum((0, 2, 3)).double().cpu().numpy()
    return np.append(over, over.sum())


def suggested_factors(mean: float, std: float) -> dict[str, float]:
    """``scaling_factor = 1 / std`` and ``shift_factor = mean`` of the raw latents (all elements)."""
    return {"scaling_factor": 1.0 / std if std > 0 else float("nan"), "shift_factor": float(mean)}


@dataclass
class Histograms:
    """Per-channel histograms with edges fixed by the first batch: its channel min to max, widened
    by half the span each side; values outside count as ``below`` / ``above``."""

    bins: int
    edges: np.ndarray | None = None  # (C, bins + 1)
    counts: np.ndarray | None = None  # (C, bins)
    below: np.ndarray | None = None
    above: np.ndarray | None = None

    def update(self, z: torch.Tensor) -> None:
        x = z.detach().double().transpose(0, 1).flatten(1).cpu().numpy()  # (C, elements)
        if self.edges is None:
            lo, hi = x.min(1), x.max(1)
            pad = np.maximum(0.5 * (hi - lo), 1e-6)
            self.edges = np.linspace(lo - pad, hi + pad, self.bins + 1, axis=1)
            self.counts = np.zeros((len(x), self.bins))
            self.below, self.above = np.zeros(len(x)), np.zeros(len(x))
        for c, values in enumerate(x):
            self.counts[c] += np.histogram(values, self.edges[c])[0]
            self.below[c] += (values < self.edges[c, 0]).sum()
            self.above[c] += (values > self.edges[c, -1]).sum()


def radial_bins(h: int, w: int, bins: int) -> torch.Tensor:
    """``(H, W)`` int64: the radial bin of each FFT frequency (fraction of Nyquist, ``bins`` equal
    bins on (0, 1]); -1 for the DC term and the corners beyond Nyquist."""
    fy = torch.fft.fftfreq(h, dtype=torch.float64).view(-1, 1)
    fx = torch.fft.fftfreq(w, dtype=torch.float64).view(1, -1)
    r = torch.sqrt(fy * fy + fx * fx) / 0.5
    index = torch.ceil(r * bins).long() - 1
    index[(r == 0) | (r > 1)] = -1
    return index


@dataclass
class Spectrum:
    """Streamed radially averaged power spectrum of every ``(H, W)`` map of ``(N, C, H, W)`` tensors.

    Per map: ``|FFT2(x − mean(x))|² / (H·W)``, averaged over the frequencies of each radial bin;
    the profiles of all maps are averaged (per bin, over the maps with frequencies in it). :meth:`profile` normalises to sum 1; :meth:`high_share`
    is the share of the total (non-DC, within-Nyquist) power above half the Nyquist frequency.
    """

    bins: int
    density: np.ndarray = None  # (bins,) sum over maps of the per-bin mean power
    power: np.ndarray = None  # (bins,) sum over maps of the per-bin total power
    seen: np.ndarray = None  # (bins,) maps whose grid has a frequency in the bin
    maps: int = 0
    _index: dict = field(default_factory=dict)

    def __post_init__(self):
        self.density = np.zeros(self.bins)
        self.power = np.zeros(self.bins)
        self.seen = np.zeros(self.bins)

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().double()
        h, w = x.shape[-2:]
        if (h, w) not in self._index:
            self._index[(h, w)] = radial_bins(h, w, self.bins).to(x.device)
        index = self._index[(h, w)]
        maps = (x - x.mean((-2, -1), keepdim=True)).flatten(0, -3)
        p = torch.fft.fft2(maps).abs().square() / (h * w)  # (M, H, W)
        keep = index >= 0
        flat, idx = p[:, keep], index[keep]
        total = torch.zeros(len(flat), self.bins, dtype=torch.float64, device=x.device).index_add_(1, idx, flat)
        count = torch.zeros(self.bins, dtype=torch.float64, device=x.device).index_add_(
            0, idx, torch.ones_like(idx, dtype=torch.float64)
        )
        self.power += total.sum(0).cpu().numpy()
        self.seen += (count > 0).cpu().numpy() * len(flat)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.density += np.nan_to_num((total / count).sum(0).cpu().numpy())
        self.maps += len(flat)

    @property
    def frequencies(self) -> np.ndarray:
        """Bin centres as a fraction of the Nyquist frequency."""
        return (np.arange(self.bins) + 0.5) / self.bins

    def profile(self) -> np.ndarray:
        """The mean power per bin over the maps whose grid has frequencies in it, normalised to sum 1;
        NaN for a bin no grid reaches (a small grid has fewer distinct radii than bins)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(self.seen > 0, self.density / self.seen, np.nan)
        total = np.nansum(mean)
        return mean / total if total > 0 else np.full(self.bins, np.nan)

    def high_share(self) -> float:
        total = self.power.sum()
        return float(self.power[self.frequencies > 0.5].sum() / total) if total > 0 else float("nan")


def add_latent_noise(z: torch.Tensor, relative: float, seeds: list[int]) -> torch.Tensor:
    """``z + relative · std(z_i) · ε_i``: Gaussian noise scaled by each image's own latent std (all its
    elements, ddof = 0); ``ε_i`` from a generator seeded with ``seeds[i]`` (independent of batching)."""
    std = z.detach().float().flatten(1).std(1, correction=0).view(-1, *([1] * (z.ndim - 1)))
    noise = torch.stack([torch.randn(z.shape[1:], generator=torch.Generator().manual_seed(int(s))) for s in seeds])
    return z + (relative * std * noise.to(z.device)).to(z.dtype)
