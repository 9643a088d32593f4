"""MS-SSIM per image (Wang, Simoncelli and Bovik 2003), in float64: scipy's separable filters on CPU,
torchmetrics' SSIM maps on accelerators.

At each of 5 scales the contrast-structure term of an 11x11 Gaussian window (sigma 1.5) is averaged
over the pixels the window fits ("valid", as the paper's MATLAB code filters), then the images are
halved by 2x2 averaging; the last scale contributes its full SSIM. The terms are clipped at 0 and
combined with the paper's exponents (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), per colour channel,
and the 3 channels' values are averaged.

That is pytorch-msssim's ``ms_ssim`` (its Gaussian window taken in float64). torchmetrics' own
``multiscale_structural_similarity_index_measure`` differs by up to 3e-4 on Kodak at 256²: it averages
its last scale's SSIM over reflect-padded borders too, and over the channels before combining scales.

torch's float64 convolutions are slow on a CPU (2.7 s an image at 256² through torchmetrics, 2 cores),
so ``backend=auto`` filters with scipy there (two 1-D passes of the same window, the images shared out
between the run's torch threads) and uses torchmetrics on accelerators; both give the same values
(tested to 1e-9).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F

from evalvae.metrics import info as shipped
from evalvae.metrics.base import PairMetric
from evalvae.metrics.pixel import DATA_RANGE, CpuBackend

# The exponents of the 5 scales, finest first (Wang et al. 2003, Table 1's fitted values)
WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


class MSSSIM(CpuBackend, PairMetric):
    """Multi-scale SSIM, higher is better; 1 for identical images.

    An image needs its coarsest scale to hold the window: a side of at least ``11 x 2^4 = 176`` px at 5
    scales (each halving drops an odd last row or column, as torchmetrics' 2x2 average pooling does).
    A smaller image has no MS-SSIM: NaN, counted in summary.csv's note. (pytorch-msssim accepts sides
    from 161 px: it pads odd sides with zeros before halving, which darkens their edges; on sides that
    are multiples of 16 the two agree.)
    """

    infos = (shipped.MS_SSIM,)
    CPU = "scipy"
    PACKAGES = {"scipy": ("scipy", "numpy"), "torchmetrics": ("torchmetrics", "torch")}

    SIGMA = 1.5
    WINDOW = 11  # 2 * int(3.5 * sigma + 0.5) + 1, as torchmetrics and scikit-image size it
    min_side = WINDOW * 2 ** (len(WEIGHTS) - 1)
    min_side_reason = f"the {WINDOW}x{WINDOW} window does not fit its coarsest of {len(WEIGHTS)} scales"

    def __init__(self, backend: str = "auto"):
        self._choose("metrics.ms_ssim.backend", backend)

    def __call__(self, original: torch.Tensor, reconstruction: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.too_small(original):
            return self.undefined(original)
        backend = self.backend_for(original.device)
        self.backends_ran.add(backend)
        n, c, h, w = original.shape
        if backend == "scipy":
            a = original.detach().cpu().double().numpy()
            b = reconstruction.detach().cpu().double().numpy()
            threads = min(n, torch.get_num_threads())
            if threads > 1:  # scipy's filters release the GIL; each image on its own, whatever the threads
                with ThreadPoolExecutor(threads) as pool:
                    values = list(pool.map(_ms_ssim, a, b))
            else:
                values = [_ms_ssim(x, y) for x, y in zip(a, b)]
            return {"ms_ssim": torch.tensor(values, dtype=torch.float64, device=original.device)}
        from torchmetrics.functional.image import structural_similarity_index_measure as ssim

        x, y = original.double().reshape(n * c, 1, h, w), reconstruction.double().reshape(n * c, 1, h, w)
        kw = {"gaussian_kernel": True, "sigma": self.SIGMA, "data_range": DATA_RANGE, "reduction": "none"}
        terms = []
        for _ in WEIGHTS[1:]:
            _, cs = ssim(y, x, return_contrast_sensitivity=True, **kw)  # cs: the valid pixels' mean
            terms.append(cs.relu())
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        _, full = ssim(y, x, return_full_image=True, **kw)
        pad = self.WINDOW // 2  # the border the window overhangs, dropped as at the finer scales
        terms.append(full[..., pad:-pad, pad:-pad].mean(dim=(1, 2, 3)).relu())
        exponents = torch.tensor(WEIGHTS, dtype=torch.float64, device=x.device).view(-1, 1)
        per_channel = torch.stack(terms).pow(exponents).prod(dim=0)
        return {"ms_ssim": per_channel.view(n, c).mean(dim=1)}

    def protocol(self) -> dict:
        return {
            "implementation": f"{self.backend} (auto: scipy filters on CPU, torchmetrics SSIM maps elsewhere), "
            "float64; pytorch-msssim's combination",
            "window": f"gaussian, sigma={self.SIGMA}, {self.WINDOW}x{self.WINDOW}, valid pixels",
            "scales": len(WEIGHTS),
            "weights": list(WEIGHTS),
            "downsampling": "2x2 average, odd last row/column dropped",
            "k1": 0.01,
            "k2": 0.03,
            "data_range": DATA_RANGE,
            "reduction": "per RGB channel, terms clipped at 0, then the mean of the 3 channels",
        }


def _window() -> np.ndarray:
    """The 11 taps of the Gaussian (sigma 1.5), normalised to sum 1, as torchmetrics builds them."""
    t = np.arange(MSSSIM.WINDOW, dtype=np.float64) - (MSSSIM.WINDOW - 1) / 2
    g = np.exp(-(t**2) / (2 * MSSSIM.SIGMA**2))
    return g / g.sum()


def _ms_ssim(original: np.ndarray, reconstruction: np.ndarray) -> float:
    """MS-SSIM of one ``(C, H, W)`` float64 image pair in [0, 255]: the mean of its channels' values."""
    from scipy.ndimage import correlate1d

    g, pad = _window(), MSSSIM.WINDOW // 2
    c1, c2 = (0.01 * DATA_RANGE) ** 2, (0.03 * DATA_RANGE) ** 2

    def blur(z: np.ndarray) -> np.ndarray:  # the window's valid pixels only
        return correlate1d(correlate1d(z, g, axis=-1), g, axis=-2)[..., pad:-pad, pad:-pad]

    x, y = original, reconstruction
    terms = []
    for scale in range(len(WEIGHTS)):
        mx, my = blur(x), blur(y)
        vx = np.maximum(blur(x * x) - mx * mx, 0.0)
        vy = np.maximum(blur(y * y) - my * my, 0.0)
        cov = blur(x * y) - mx * my
        cs = (2 * cov + c2) / (vx + vy + c2)
        if scale < len(WEIGHTS) - 1:
            terms.append(cs.mean(axis=(1, 2)))
            h, w = x.shape[-2] // 2, x.shape[-1] // 2
            x = x[:, : 2 * h, : 2 * w].reshape(-1, h, 2, w, 2).mean(axis=(2, 4))
            y = y[:, : 2 * h, : 2 * w].reshape(-1, h, 2, w, 2).mean(axis=(2, 4))
        else:
            terms.append(((2 * mx * my + c1) / (mx * mx + my * my + c1) * cs).mean(axis=(1, 2)))
    per_channel = np.prod(np.maximum(np.stack(terms), 0.0) ** np.asarray(WEIGHTS)[:, None], axis=0)
    return float(per_channel.mean())
