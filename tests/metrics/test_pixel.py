"""PSNR and SSIM against scikit-image and torchmetrics, and on luma (``channels=y``) against MATLAB's definitions
(the contract, tests/metrics/test_contract.py, checks identical inputs, batch and order)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from evalvae.metrics import from_uint8, to_pixels
from evalvae.metrics.info import METRICS, PSNR_Y, SSIM_Y
from evalvae.metrics.pixel import PSNR, SSIM, luma
from tests.helpers import kodak_crops, photo

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


# -- luma (channels=y) ------------------------------------------------------------------------------------
# PSNR and SSIM on luma (``channels=y``) against a float64 transcription of MATLAB's ``rgb2ycbcr`` and ``ssim_index``
# written here, the convention of the super-resolution literature.
#
# Measured once against pyiqa 0.1.16 (too heavy a dependency for CI) on 12 Kodak crops at 256² with noise: its
# ``ssim`` and ``psnry`` with ``color_space='ycbcr'`` (and ``data_range=255`` for ``psnry``) equal evalvae's to 1.5e-6
# and 6.9e-5 dB; with their default ``color_space='yiq'`` (full-range Y) they differ by up to 0.041 and 1.32 dB.
# Measured: 0.0 dB for PSNR-Y, 4.4e-16 for SSIM-Y (scikit-image's filters against the sliding windows below)
LUMA_TOL = 1e-12


def matlab_y(rgb: np.ndarray) -> np.ndarray:
    """MATLAB's ``rgb2ycbcr`` Y of a uint8 ``(H, W, 3)`` image: ``uint8(16 + [65.481 128.553 24.966] * rgb / 255)``,
    uint8's rounding being half away from zero, computed exactly in integers."""
    numerator = rgb.astype(np.int64) @ np.array([65481, 128553, 24966], dtype=np.int64)  # thousandths of 255 * Y'
    return 16 + (2 * numerator + 255000) // 510000  # round(numerator / 255000), halves up


def matlab_ssim_index(a: np.ndarray, b: np.ndarray) -> float:
    """``ssim_index.m`` (Wang et al. 2004) in float64: fspecial('gaussian', 11, 1.5), K = [0.01 0.03], L = 255,
    filter2(..., 'valid'), mean2 of the map, no downsampling."""
    t = np.arange(-5, 6, dtype=np.float64)
    window = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * 1.5**2))
    window /= window.sum()

    def filter2(img):
        return np.einsum("ijkl,kl->ij", sliding_window_view(img, (11, 11)), window)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu1, mu2 = filter2(a), filter2(b)
    s1, s2, s12 = filter2(a * a) - mu1**2, filter2(b * b) - mu2**2, filter2(a * b) - mu1 * mu2
    ssim_map = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s1 + s2 + c2))
    return float(ssim_map.mean())


def test_luma_is_matlabs_rgb2ycbcr_for_8_bit_colours():
    r = np.arange(256)
    # every red and green, every 4th blue and the last (4.2M colours of 16.7M, in a second)
    rgb = np.stack(np.meshgrid(r, r, [*r[::4], 255], indexing="ij"), axis=-1).reshape(256, -1, 3)
    ours = luma(torch.from_numpy(rgb).permute(2, 0, 1)[None].double())[0, 0].numpy()
    expected = matlab_y(rgb)
    assert np.array_equal(ours, expected) and (ours.min(), ours.max()) == (16, 235)
    exact = (rgb.astype(np.int64) @ np.array([65481, 128553, 24966])) % 255000 == 127500
    assert exact.sum() > 10  # colours whose Y lies exactly halfway: rounded up, as MATLAB's uint8
    assert np.array_equal(ours[exact], np.ceil((rgb[exact] @ np.array([65.481, 128.553, 24.966])) / 255 + 16))


@pytest.mark.parametrize("backend", ["skimage", "torchmetrics"])
def test_psnr_y_and_ssim_y_equal_matlabs_definitions_on_kodak(backend):
    x = kodak_crops(4, side=96)
    g = torch.Generator().manual_seed(1)
    y = (x + torch.randn(x.shape, generator=g, dtype=torch.float64) * 8).clamp(0, 255).round()
    psnr_y = PSNR(channels="y")(x, y)["psnr"]
    ssim_y = SSIM(backend=backend, channels="y")(x, y)["ssim"]
    for i in range(len(x)):
        a = matlab_y(x[i].permute(1, 2, 0).numpy().astype(np.uint8)).astype(np.float64)
        b = matlab_y(y[i].permute(1, 2, 0).numpy().astype(np.uint8)).astype(np.float64)
        assert psnr_y[i].item() == pytest.approx(10 * np.log10(255**2 / np.mean((a - b) ** 2)), abs=LUMA_TOL)
        assert ssim_y[i].item() == pytest.approx(matlab_ssim_index(a, b), abs=LUMA_TOL)
    # luma is not RGB: the values differ from the plain ones by more than any tolerance
    assert (psnr_y - PSNR()(x, y)["psnr"]).abs().min() > 0.1


def test_channels_y_is_recorded_titled_and_checked():
    psnr, ssim = PSNR(channels="y"), SSIM(channels="y")
    assert (psnr.infos, ssim.infos) == ((PSNR_Y,), (SSIM_Y,))
    assert (PSNR_Y.name, PSNR_Y.title, SSIM_Y.name, SSIM_Y.title) == ("psnr", "PSNR-Y (dB)", "ssim", "SSIM-Y")
    for metric in (psnr, ssim):
        assert metric.protocol()["channels"] == "y" and "BT.601" in metric.protocol()["luma"]
    # the registry gives the same infos from the config alone, and RGB's protocol is unchanged by the option
    assert METRICS["psnr"].infos_for({"channels": "y"}) == (PSNR_Y,)
    assert METRICS["ssim"].infos_for({"channels": "rgb"}) == METRICS["ssim"].infos
    assert "channels" not in PSNR().protocol() and "channels" not in SSIM().protocol()
    with pytest.raises(Exception, match=r"invalid metrics\.psnr\.channels='ycbcr'; choose one of rgb, y"):
        PSNR(channels="ycbcr")
    with pytest.raises(Exception, match=r"invalid metrics\.ssim\.channels='Y'; choose one of rgb, y"):
        SSIM(channels="Y")


def test_identical_images_give_inf_and_1_on_luma():
    x, _ = pair(n=2, h=32, w=40)
    assert torch.isinf(PSNR(channels="y")(x, x)["psnr"]).all()
    assert (SSIM(channels="y")(x, x)["ssim"] == 1).all()
