"""MS-SSIM against pytorch-msssim, the 5-scale reference implementation (the contract, tests/metrics/test_contract.py,
checks identical inputs, batch, order, non-finite inputs and the device)."""

from __future__ import annotations

import pytest
import torch

from evalvae.metrics.msssim import MSSSIM, WEIGHTS
from tests.helpers import kodak_crops
from tests.metrics.test_pixel import pair
from tests.prerequisites import require_module

# Measured on 8 Kodak crops at 256² (the test takes 4 at 192²), noise 12 and a blur: 1.6e-14 from pytorch-msssim fed a float64 window, and
# 7e-15 between the two backends. The tolerance leaves room for other summation orders on another CPU.
TOL = 1e-10
# pytorch-msssim's default window is computed in float32: measured 3.2e-6 from the float64 values
FLOAT32_WINDOW_TOL = 1e-5


def distorted(x: torch.Tensor) -> torch.Tensor:
    """Half the images with noise, half blurred (3x3 box), rounded to 8 bits."""
    g = torch.Generator().manual_seed(0)
    noisy = x + torch.randn(x.shape, generator=g, dtype=torch.float64) * 12
    blurred = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1)
    half = (len(x) + 1) // 2
    return torch.cat([noisy[:half], blurred[half:]]).clamp(0, 255).round()


def reference(x: torch.Tensor, y: torch.Tensor, float64_window: bool) -> torch.Tensor:
    msssim = require_module("pytorch_msssim", "pip install pytorch-msssim")
    win = None
    if float64_window:  # its own Gaussian (11 taps, sigma 1.5), taken in float64 as evalvae's
        t = torch.arange(11, dtype=torch.float64) - 5
        g = torch.exp(-(t**2) / (2 * 1.5**2))
        win = (g / g.sum()).view(1, 1, -1).repeat(3, 1, 1, 1)
    return msssim.ms_ssim(x, y, data_range=255, size_average=False, win=win)


def test_equals_pytorch_msssim_on_kodak():
    x = kodak_crops(4, side=192)
    y = distorted(x)
    ours = MSSSIM(backend="scipy")(x, y)["ms_ssim"]
    assert ours.dtype == torch.float64 and ours.shape == (len(x),)
    assert ours.min() > 0.5 and ours.max() < 1  # a distortion scores below 1, not wildly
    torch.testing.assert_close(ours, reference(x, y, float64_window=True), rtol=0, atol=TOL)
    torch.testing.assert_close(ours, reference(x, y, float64_window=False), rtol=0, atol=FLOAT32_WINDOW_TOL)


# torchmetrics' float64 convolutions take 2.7 s an image at 256² on a CPU: it is checked against scipy here, on
# two smaller images, and so against pytorch-msssim through the test above
def test_the_backends_agree_on_odd_sides_where_halving_drops_a_row():
    x, y = pair(n=2, h=183, w=201, noise=20.0)  # 183 -> 91 -> 45 -> 22 -> 11: odd sides at three scales
    scipy_values = MSSSIM(backend="scipy")(x, y)["ms_ssim"]
    torch.testing.assert_close(scipy_values, MSSSIM(backend="torchmetrics")(x, y)["ms_ssim"], rtol=0, atol=TOL)
    assert torch.isfinite(scipy_values).all()


def test_the_coarsest_scale_must_hold_the_window():
    metric = MSSSIM()
    assert metric.min_side == 11 * 2 ** (len(WEIGHTS) - 1) == 176
    x, y = pair(n=2, h=176, w=200)
    assert torch.isfinite(metric(x, y)["ms_ssim"]).all()
    short = metric(x[..., :175, :], y[..., :175, :])["ms_ssim"]
    assert torch.isnan(short).all()
    assert metric.size_note(2) == (
        "2 image(s) with a side below 176 px have no MS-SSIM (the 11x11 window does not fit its coarsest of 5 scales)"
    )


def test_the_protocol_states_the_scales_weights_and_backend():
    metric = MSSSIM()
    protocol = metric.protocol()
    assert protocol["scales"] == 5 and protocol["weights"] == list(WEIGHTS)
    assert sum(WEIGHTS) == pytest.approx(1.0001, abs=1e-12)  # the paper's rounded values, as every implementation
    assert metric.backend_for(torch.device("cpu")) == "scipy" and metric.libraries == (
        "scipy",
        "numpy",
        "torchmetrics",
        "torch",
    )
    x, y = pair(n=1, h=176, w=176)
    metric(x, y)
    assert metric.ran("cpu") == {"backend": "scipy", "backend_requested": "auto"}
    with pytest.raises(Exception, match=r"metrics\.ms_ssim\.backend.*'skimage'"):
        MSSSIM(backend="skimage")
