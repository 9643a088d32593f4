"""PSNR and SSIM per image: PSNR in float64 here, SSIM from scikit-image on CPU and torchmetrics elsewhere.

Both score the RGB channels by default, or luma alone (``channels=y``): the MATLAB convention of the
super-resolution literature, Y of ITU-R BT.601 as MATLAB's ``rgb2ycbcr`` gives it for 8-bit RGB
(studio swing, 16-235, rounded to 8 bits; :func:`luma`).

torchmetrics and scikit-image are imported by the SSIM backend that runs (importing torchmetrics
takes seconds), so building these metrics loads neither.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

import numpy as np
import torch

from evalvae.errors import check_choice
from evalvae.metrics import info as shipped
from evalvae.metrics.base import PairMetric

DATA_RANGE = 255.0
CHANNELS = ("rgb", "y")
# ITU-R BT.601 studio-swing luma of 8-bit R, G, B, as MATLAB's rgb2ycbcr: 16 + (65.481 R + 128.553 G + 24.966 B) / 255
BT601_Y = (65481, 128553, 24966)  # the weights in thousandths, so that integer pixels give an exact numerator


def luma(pixels: torch.Tensor) -> torch.Tensor:
    """``(N, 1, H, W)`` float64 BT.601 Y of ``(N, 3, H, W)`` RGB pixels in [0, 255]: ``16 + (65.481 R + 128.553 G
    + 24.966 B) / 255`` rounded half up to an integer in [16, 235], as MATLAB's ``rgb2ycbcr`` returns it for
    ``uint8`` images. For 8-bit pixels the rounding is exact (an integer numerator over 255,000), so the
    194 colours whose Y lies exactly halfway round up on every device."""
    weights = torch.tensor(BT601_Y, dtype=torch.float64, device=pixels.device).view(1, 3, 1, 1)
    numerator = (pixels.double() * weights).sum(dim=1, keepdim=True)
    return torch.floor((numerator + 127_500.0) / 255_000.0).add_(16.0)


def _channels(argument: str, channels: str) -> str:
    return check_choice(argument, channels, CHANNELS)


def psnr(original: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """``(N,)`` float64 ``10 log10(255^2 / MSE)`` of ``(N, 3, H, W)`` pixels in [0, 255]; identical images give inf."""
    diff = reconstruction.double() - original.double()
    mse = (diff * diff).mean(dim=(1, 2, 3))
    return (10.0 * torch.log10(DATA_RANGE**2 / mse)).reshape(-1)


class PSNR(PairMetric):
    """``10 log10(255^2 / MSE)`` over all pixels and channels of each image, in float64 (:func:`psnr`).

    Equals ``skimage.metrics.peak_signal_noise_ratio(data_range=255)`` and torchmetrics'
    ``peak_signal_noise_ratio`` (whose float32 constants differ by ~1e-6 dB); identical images give inf.
    With ``channels=y``, the MSE is of the BT.601 luma (:func:`luma`), still against 255²: PSNR-Y.
    """

    infos = (shipped.PSNR,)

    def __init__(self, channels: str = "rgb"):
        self.channels = _channels("metrics.psnr.channels", channels)
        if self.channels == "y":
            self.infos = (shipped.PSNR_Y,)

    def __call__(self, original: torch.Tensor, reconstruction: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.channels == "y":
            original, reconstruction = luma(original), luma(reconstruction)
        return {"psnr": psnr(original, reconstruction)}

    def protocol(self) -> dict:
        return {
            "implementation": "evalvae float64 10 log10(255^2 / MSE)",
            "data_range": DATA_RANGE,
            "reduction": "per image over H, W and RGB" if self.channels == "rgb" else "per image over H, W of Y",
            **_luma_protocol(self.channels),
        }


def _luma_protocol(channels: str) -> dict:
    """What ``metrics.json`` states of the channels scored (nothing for RGB, as runs before the option)."""
    if channels == "rgb":
        return {}
    return {
        "channels": "y",
        "luma": "ITU-R BT.601 studio swing, 16 + (65.481 R + 128.553 G + 24.966 B) / 255, rounded (MATLAB rgb2ycbcr)",
    }


class CpuBackend:
    """A metric with two implementations of the same values: one fast on a CPU (``CPU``), torchmetrics in float64
    elsewhere. ``backend=auto`` picks by the images' device; another choice forces one."""

    CPU: ClassVar[str]
    PACKAGES: ClassVar[dict[str, tuple[str, ...]]]  # backend -> the packages whose versions can move its values

    def _choose(self, argument: str, backend: str) -> None:
        self.backend = check_choice(argument, backend, ("auto", "torchmetrics", self.CPU))
        self.backends_ran: set[str] = set()  # the backends that computed values in this process

    @property
    def libraries(self) -> tuple[str, ...]:
        """The packages of the backend asked for (both under ``auto``: which runs follows the device)."""
        names = self.PACKAGES if self.backend == "auto" else [self.backend]
        return tuple(dict.fromkeys(p for name in names for p in self.PACKAGES[name]))

    def backend_for(self, device: torch.device) -> str:
        """The backend that computes the values of images on ``device``."""
        if self.backend != "auto":
            return self.backend
        return self.CPU if torch.device(device).type == "cpu" else "torchmetrics"

    def ran(self, device) -> dict:
        """The backend that computed this run's values (``backend_for(device)`` where every value came from
        stored results), and the one asked for."""
        ran = ", ".join(sorted(self.backends_ran)) or self.backend_for(device)
        return {"backend": ran, "backend_requested": self.backend}


class SSIM(CpuBackend, PairMetric):
    """SSIM with an 11x11 Gaussian window (sigma 1.5), population covariance, K1=0.01, K2=0.03.

    Equals ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, channel_axis=-1, data_range=255)``: the SSIM map is averaged
    over RGB and over pixels at least 5 px from the border (torchmetrics' own mean keeps the
    border, which differs by up to ~5e-4 on small images, so evalvae crops its map as scikit-image
    does). ``backend=auto`` uses torchmetrics
    in float64 on accelerators and scikit-image on CPU, where it is about 30x faster; both give
    the same value (tested to 1e-9).

    An image with a side below the window (11 px at sigma 1.5) has no SSIM: NaN with either backend
    (scikit-image refuses such an image; torchmetrics' border crop leaves no pixel). summary.csv's note
    counts these images.

    With ``channels=y`` the same SSIM is taken of the BT.601 luma alone (:func:`luma`), without
    downsampling: MATLAB's ``ssim_index`` on ``rgb2ycbcr``'s Y, as the super-resolution literature and
    pyiqa's ``ssim`` with ``color_space='ycbcr'`` compute it.
    """

    infos = (shipped.SSIM,)
    CPU = "skimage"
    PACKAGES = {"skimage": ("scikit-image",), "torchmetrics": ("torchmetrics", "torch")}

    def __init__(self, sigma: float = 1.5, backend: str = "auto", channels: str = "rgb"):
        self.sigma = float(sigma)
        self._choose("metrics.ssim.backend", backend)
        self.channels = _channels("metrics.ssim.channels", channels)
        if self.channels == "y":
            self.infos = (shipped.SSIM_Y,)

    @property
    def window(self) -> int:
        """The Gaussian window's side: ``2 * int(3.5 * sigma + 0.5) + 1``, as scikit-image and torchmetrics size it."""
        return 2 * int(3.5 * self.sigma + 0.5) + 1

    @property
    def min_side(self) -> int:
        return self.window

    @property
    def min_side_reason(self) -> str:
        return f"the {self.window}x{self.window} window does not fit"

    def __call__(self, original: torch.Tensor, reconstruction: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.too_small(original):
            return self.undefined(original)
        if self.channels == "y":
            original, reconstruction = luma(original), luma(reconstruction)
        return {"ssim": self._ssim(original, reconstruction)}

    def _ssim(self, original: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        backend = self.backend_for(original.device)
        self.backends_ran.add(backend)
        if backend == "torchmetrics":
            from torchmetrics.functional.image import structural_similarity_index_measure

            _, ssim_map = structural_similarity_index_measure(
                reconstruction.double(),
                original.double(),
                gaussian_kernel=True,
                sigma=self.sigma,
                data_range=DATA_RANGE,
                return_full_image=True,
            )
            # torchmetrics averages the whole map, reflect-padded borders included; scikit-image
            # (and the SSIM paper's reference code) drop the border the window overhangs.
            pad = int(3.5 * self.sigma + 0.5)
            return ssim_map[..., pad:-pad, pad:-pad].mean(dim=(1, 2, 3))
        from skimage.metrics import structural_similarity

        a = original.detach().cpu().double().permute(0, 2, 3, 1).numpy()
        b = reconstruction.detach().cpu().double().permute(0, 2, 3, 1).numpy()

        def one(x: np.ndarray, y: np.ndarray) -> float:
            kwargs = {"gaussian_weights": True, "sigma": self.sigma, "use_sample_covariance": False}
            return structural_similarity(x, y, channel_axis=-1, data_range=DATA_RANGE, **kwargs)

        # Each image on its own, so the values do not depend on the threads: scikit-image's filters
        # release the GIL, and the run's torch threads share out the batch (1.75x on 2 cores at 256 px).
        threads = min(len(a), torch.get_num_threads())
        if threads > 1:
            with ThreadPoolExecutor(threads) as pool:
                values = list(pool.map(one, a, b))
        else:
            values = [one(x, y) for x, y in zip(a, b)]
        return torch.from_numpy(np.asarray(values, dtype=np.float64)).to(original.device)

    def protocol(self) -> dict:
        return {
            "implementation": f"{self.backend} (auto: torchmetrics float64 on accelerators, skimage on CPU)",
            "window": f"gaussian, sigma={self.sigma}, {self.window}x{self.window} (truncate 3.5)",
            "covariance": "population (use_sample_covariance=False)",
            "k1": 0.01,
            "k2": 0.03,
            "data_range": DATA_RANGE,
            "reduction": f"mean over {'RGB' if self.channels == 'rgb' else 'Y'} and pixels >= 5 px from the border",
            **_luma_protocol(self.channels),
        }
