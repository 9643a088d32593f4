"""Colour fidelity per image: CIEDE2000 colour differences of every pixel, in CIELAB.

Hue and saturation shifts that PSNR barely registers (a VAE tinting a whole photo) show up as
ΔE. Both images go through ``skimage.color.rgb2lab`` (sRGB companding, illuminant D65, 2°
observer) and ``skimage.color.deltaE_ciede2000`` (kL = kC = kH = 1, Sharma, Wu and Dalal 2005);
the per-image values are the mean and the 95th percentile (numpy's default linear interpolation)
of the H×W map of pixel ΔE. A ΔE of about 1 is a just-noticeable difference; 2–3 is visible side by side.
"""

from __future__ import annotations

import numpy as np
import torch

from evalvae.metrics import info as shipped
from evalvae.metrics.base import PairMetric

ILLUMINANT = "D65"
OBSERVER = "2"


def lab(pixels: np.ndarray) -> np.ndarray:
    """``(..., 3)`` sRGB pixels in [0, 255] -> CIELAB (D65, 2°), float64."""
    from skimage.color import rgb2lab

    return rgb2lab(np.asarray(pixels, dtype=np.float64) / 255.0, illuminant=ILLUMINANT, observer=OBSERVER)


def ciede2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 ΔE of ``(..., 3)`` CIELAB colours (kL = kC = kH = 1): ``(...)`` float64."""
    from skimage.color import deltaE_ciede2000

    return deltaE_ciede2000(np.asarray(lab1, np.float64), np.asarray(lab2, np.float64), channel_axis=-1)


def delta_e_map(original: np.ndarray, reconstruction: np.ndarray) -> np.ndarray:
    """Per-pixel CIEDE2000 ΔE of two ``(H, W, 3)`` sRGB images in [0, 255]: ``(H, W)`` float64."""
    return ciede2000(lab(original), lab(reconstruction))


class DeltaE(PairMetric):
    """Mean (``delta_e``) and 95th percentile (``delta_e_p95``) of per-pixel CIEDE2000 ΔE; identical images give 0."""

    infos = (shipped.DELTA_E, shipped.DELTA_E_P95)
    libraries = ("scikit-image", "numpy")

    percentile = 95.0

    def __call__(self, original: torch.Tensor, reconstruction: torch.Tensor) -> dict[str, torch.Tensor]:
        a = original.detach().cpu().double().permute(0, 2, 3, 1).numpy()
        b = reconstruction.detach().cpu().double().permute(0, 2, 3, 1).numpy()
        maps = [delta_e_map(x, y) for x, y in zip(a, b)]
        mean = np.array([m.mean() for m in maps], dtype=np.float64)
        high = np.array([np.percentile(m, self.percentile) for m in maps], dtype=np.float64)
        device = original.device
        return {"delta_e": torch.from_numpy(mean).to(device), "delta_e_p95": torch.from_numpy(high).to(device)}

    def protocol(self) -> dict:
        return {
            "implementation": "skimage.color.rgb2lab + skimage.color.deltaE_ciede2000 (kL=kC=kH=1), float64",
            "colour_space": f"sRGB [0, 255] / 255 -> CIELAB, illuminant {ILLUMINANT}, observer {OBSERVER}°",
            "reduction": f"per image: mean and {self.percentile:g}th percentile (numpy linear) of the H×W pixel ΔE map",
        }
