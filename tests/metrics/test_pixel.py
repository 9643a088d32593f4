"""PSNR and SSIM against scikit-image and torchmetrics (the contract, tests/metrics/test_contract.py, checks identical
inputs, batch and order)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from evalvae.metrics import from_uint8, to_pixels
from evalvae.metrics.pixel import PSNR, SSIM
from tests.helpers import photo

# Agreement with scikit-image, both float64 formulas: measured max |difference| 0.0 dB for PSNR and 1.2e-15 for
# SSIM (0.0 with the skimage backend, 1.2e-15 with torchmetrics' float64 convolutions). The tolerances leave room
# for other summation orders and libm on another CPU: ~300 float64 ulps at 30 dB, and ~100x the SSIM measured.
PSNR_TOL_DB = 1e-12
SSIM_TOL = 1e-13
# torchmetrics' PSNR takes log(255) and log(10) in float32: measured 1.1e-6 dB from the float64 value
PSNR_TORCHMETRICS_TOL_DB = 1e-5


def pair(n=4, h=48, w=64, noise=12.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    orig = torch.stack([torch.from_numpy(photo(h, w, seed + i)).permute(2, 0, 1) for i in range(n)]).double()
    rec = (orig + torch.randn(orig.shape, generator=g, dtype=torch.float64) * noise).clamp(0, 255).round()
    return orig, rec


def sk_psnr(o, r):
    return [peak_signal_noise_ratio(a.numpy(), b.numpy(), data_range=255) for a, b in zip(o, r)]


def sk_ssim(o: torch.Tensor, r: torch.Tensor) -> list[float]:
    """scikit-image's SSIM of each pair, NaN where it refuses the image (a side below its 11 px window)."""
    out = []
    for a, b in zip(o.permute(0, 2, 3, 1).numpy(), r.permute(0, 2, 3, 1).numpy()):
        try:
            kwargs = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False, "data_range": 255}
            out.append(structural_similarity(a, b, channel_axis=-1, **kwargs))
        except ValueError as e:
            assert "win_size exceeds image extent" in str(e)
            out.append(np.nan)
    return out


@pytest.mark.parametrize("noise", [0.7, 5.0, 40.0])
def test_psnr_equals_skimage(noise):
    o, r = pair(noise=noise)
    np.testing.assert_allclose(PSNR()(o, r)["psnr"].numpy(), sk_psnr(o, r), rtol=0, atol=PSNR_TOL_DB)


def test_psnr_equals_torchmetrics():
    """The values of torchmetrics' functional PSNR (what evalvae computed it with before), to its float32 constants."""
    from torchmetrics.functional.image import peak_signal_noise_ratio as tm_psnr

    o, r = pair(n=5, noise=7.0)
    expected = tm_psnr(r, o, data_range=255.0, reduction="none", dim=(1, 2, 3))
    np.testing.assert_allclose(PSNR()(o, r)["psnr"].numpy(), expected.numpy(), rtol=0, atol=PSNR_TORCHMETRICS_TOL_DB)
    assert tm_psnr(o[:1], o[:1], data_range=255.0).item() == float("inf")  # as evalvae's (the contract's perfect score)


@pytest.mark.parametrize("backend", ["torchmetrics", "skimage", "auto"])
@pytest.mark.parametrize("shape", [(48, 64), (256, 256), (37, 91)])
def test_ssim_equals_skimage(backend, shape):
    o, r = pair(n=2, h=shape[0], w=shape[1], noise=15.0)
    np.testing.assert_allclose(SSIM(backend=backend)(o, r)["ssim"].numpy(), sk_ssim(o, r), rtol=0, atol=SSIM_TOL)


def test_ssim_on_the_cpu_does_not_depend_on_the_threads():
    o, r = pair(n=5, noise=15.0)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = SSIM(backend="skimage")(o, r)["ssim"]
        torch.set_num_threads(2)  # the images shared out between two threads
        two = SSIM(backend="skimage")(o, r)["ssim"]
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)
    np.testing.assert_allclose(one.numpy(), sk_ssim(o, r), rtol=0, atol=SSIM_TOL)


def test_lower_quality_scores_lower():
    o, r_small = pair(noise=3.0, seed=1)
    _, r_big = pair(noise=30.0, seed=1)
    assert (PSNR()(o, r_small)["psnr"] > PSNR()(o, r_big)["psnr"]).all()
    assert (SSIM()(o, r_small)["ssim"] > SSIM()(o, r_big)["ssim"]).all()


def test_pixel_conversions():
    u8 = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16).expand(1, 3, 16, 16)
    x = from_uint8(u8)
    assert x.min() == -1 and x.max() == 1
    assert torch.equal(to_pixels(x), u8.double()), "uint8 -> [-1, 1] -> pixels must round-trip exactly"
    y = torch.tensor([-1.7, -1.0, 0.0, 0.999, 1.4]).reshape(1, 1, 1, 5)
    assert to_pixels(y).flatten().tolist() == [0.0, 0.0, 128.0, 255.0, 255.0]  # 127.5 rounds half to even
    assert to_pixels(y, quantize=False).flatten().tolist() == pytest.approx([0, 0, 127.5, 254.8725, 255])
