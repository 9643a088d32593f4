"""Colour fidelity (CIEDE2000 ΔE): the published test pairs, a float64 reference written here, a run (the contract,
tests/metrics/test_contract.py, checks identical inputs, batch and order, and non-finite reconstructions)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evalvae.metrics.color import DeltaE, ciede2000, delta_e_map, lab
from tests.helpers import compose_run, photo

# Sharma, Wu and Dalal, "The CIEDE2000 color-difference formula: implementation notes, supplementary
# test data, and mathematical observations", Color Res. Appl. 30(1):21-30, 2005, Table 1:
# (L1, a1, b1), (L2, a2, b2), ΔE00 given to 4 decimals.
SHARMA = [
    ((50.0000, 2.6772, -79.7751), (50.0000, 0.0000, -82.7485), 2.0425),
    ((50.0000, 3.1571, -77.2803), (50.0000, 0.0000, -82.7485), 2.8615),
    ((50.0000, 2.8361, -74.0200), (50.0000, 0.0000, -82.7485), 3.4412),
    ((50.0000, -1.3802, -84.2814), (50.0000, 0.0000, -82.7485), 1.0000),
    ((50.0000, -1.1848, -84.8006), (50.0000, 0.0000, -82.7485), 1.0000),
    ((50.0000, -0.9009, -85.5211), (50.0000, 0.0000, -82.7485), 1.0000),
    ((50.0000, 0.0000, 0.0000), (50.0000, -1.0000, 2.0000), 2.3669),
    ((50.0000, -1.0000, 2.0000), (50.0000, 0.0000, 0.0000), 2.3669),
    ((50.0000, 2.4900, -0.0010), (50.0000, -2.4900, 0.0009), 7.1792),
    ((50.0000, 2.4900, -0.0010), (50.0000, -2.4900, 0.0010), 7.1792),
    ((50.0000, 2.4900, -0.0010), (50.0000, -2.4900, 0.0011), 7.2195),
    ((50.0000, 2.4900, -0.0010), (50.0000, -2.4900, 0.0012), 7.2195),
    ((50.0000, -0.0010, 2.4900), (50.0000, 0.0009, -2.4900), 4.8045),
    ((50.0000, -0.0010, 2.4900), (50.0000, 0.0010, -2.4900), 4.8045),
    ((50.0000, -0.0010, 2.4900), (50.0000, 0.0011, -2.4900), 4.7461),
    ((50.0000, 2.5000, 0.0000), (50.0000, 0.0000, -2.5000), 4.3065),
    ((50.0000, 2.5000, 0.0000), (73.0000, 25.0000, -18.0000), 27.1492),
    ((50.0000, 2.5000, 0.0000), (61.0000, -5.0000, 29.0000), 22.8977),
    ((50.0000, 2.5000, 0.0000), (56.0000, -27.0000, -3.0000), 31.9030),
    ((50.0000, 2.5000, 0.0000), (58.0000, 24.0000, 15.0000), 19.4535),
    ((50.0000, 2.5000, 0.0000), (50.0000, 3.1736, 0.5854), 1.0000),
    ((50.0000, 2.5000, 0.0000), (50.0000, 3.2972, 0.0000), 1.0000),
    ((50.0000, 2.5000, 0.0000), (50.0000, 1.8634, 0.5757), 1.0000),
    ((50.0000, 2.5000, 0.0000), (50.0000, 3.2592, 0.3350), 1.0000),
    ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
    ((63.0109, -31.0961, -5.8663), (62.8187, -29.7946, -4.0864), 1.2630),
    ((61.2901, 3.7196, -5.3901), (61.4292, 2.2480, -4.9620), 1.8731),
    ((35.0831, -44.1164, 3.7933), (35.0232, -40.0716, 1.5901), 1.8645),
    ((22.7233, 20.0904, -46.6940), (23.0331, 14.9730, -42.5619), 2.0373),
    ((36.4612, 47.8580, 18.3852), (36.2715, 50.5065, 21.2231), 1.4146),
    ((90.8027, -2.0831, 1.4410), (91.1528, -1.6435, 0.0447), 1.4441),
    ((90.9257, -0.5406, -0.9208), (88.6381, -0.8985, -0.7239), 1.5381),
    ((6.7747, -0.2908, -2.4247), (5.8714, -0.0985, -2.2286), 0.6377),
    ((2.0776, 0.0795, -1.1350), (0.9033, -0.0636, -0.5514), 0.9082),
]


def _batch(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).double()


# An independent float64 reference, written here from the published definitions (not from the library evalvae
# calls). sRGB: IEC 61966-2-1 companding; XYZ from linear RGB with the sRGB (BT.709 primaries, D65) matrix as
# tabulated to 6 decimals (OpenCV's colour-conversion documentation gives the same), normalised by the CIE D65
# 2° white (ASTM E308: 95.047, 100, 108.883); CIELAB with CIE 15's constants 0.008856 and 7.787. ΔE: CIEDE2000
# as Sharma, Wu and Dalal (2005) give it, kL = kC = kH = 1.
SRGB_TO_XYZ = np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]])
D65_WHITE = np.array([0.95047, 1.0, 1.08883])


def reference_lab(rgb) -> np.ndarray:
    """(..., 3) sRGB in [0, 255] -> CIELAB, float64."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    t = (linear @ SRGB_TO_XYZ.T) / D65_WHITE
    f = np.where(t > 0.008856, np.cbrt(t), 7.787 * t + 16.0 / 116.0)
    return np.stack([116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])], -1)


def reference_ciede2000(lab1, lab2) -> np.ndarray:
    """CIEDE2000 of (..., 3) CIELAB arrays, Sharma, Wu and Dalal (2005), angles in degrees."""
    L1, a1, b1 = np.moveaxis(np.asarray(lab1, dtype=np.float64), -1, 0)
    L2, a2, b2 = np.moveaxis(np.asarray(lab2, dtype=np.float64), -1, 0)
    c7 = ((np.hypot(a1, b1) + np.hypot(a2, b2)) / 2) ** 7
    g = 0.5 * (1 - np.sqrt(c7 / (c7 + 25.0**7)))
    a1, a2 = (1 + g) * a1, (1 + g) * a2
    c1, c2 = np.hypot(a1, b1), np.hypot(a2, b2)
    h1 = np.where((a1 == 0) & (b1 == 0), 0.0, np.degrees(np.arctan2(b1, a1)) % 360)
    h2 = np.where((a2 == 0) & (b2 == 0), 0.0, np.degrees(np.arctan2(b2, a2)) % 360)
    chroma = c1 * c2
    dh = h2 - h1
    dh = np.where(chroma == 0, 0.0, np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh)))
    d_l, d_c = L2 - L1, c2 - c1
    d_h = 2 * np.sqrt(chroma) * np.sin(np.radians(dh / 2))
    l_bar, c_bar = (L1 + L2) / 2, (c1 + c2) / 2
    h_sum = h1 + h2
    h_bar = np.where(np.abs(h1 - h2) <= 180, h_sum / 2, np.where(h_sum < 360, (h_sum + 360) / 2, (h_sum - 360) / 2))
    h_bar = np.where(chroma == 0, h_sum, h_bar)
    t = (
        1
        - 0.17 * np.cos(np.radians(h_bar - 30))
        + 0.24 * np.cos(np.radians(2 * h_bar))
        + 0.32 * np.cos(np.radians(3 * h_bar + 6))
        - 0.20 * np.cos(np.radians(4 * h_bar - 63))
    )
    d_theta = 30 * np.exp(-(((h_bar - 275) / 25) ** 2))
    r_c = 2 * np.sqrt(c_bar**7 / (c_bar**7 + 25.0**7))
    s_l = 1 + 0.015 * (l_bar - 50) ** 2 / np.sqrt(20 + (l_bar - 50) ** 2)
    s_c = 1 + 0.045 * c_bar
    s_h = 1 + 0.015 * c_bar * t
    r_t = -np.sin(np.radians(2 * d_theta)) * r_c
    return np.sqrt((d_l / s_l) ** 2 + (d_c / s_c) ** 2 + (d_h / s_h) ** 2 + r_t * (d_c / s_c) * (d_h / s_h))


# evalvae's ΔE against the reference above: measured max |difference| 8.6e-14 over 200,000 random 8-bit
# colour pairs (their CIELAB equal to the last bit). CIEDE2000 jumps where two hues lie ~180° apart, so the
# conventions above (matrix, white, constants) must be the stated ones for the agreement to be this close.
DELTA_E_TOL = 1e-11


@pytest.mark.parametrize(
    ("ciede", "to_lab"), [(ciede2000, lab), (reference_ciede2000, reference_lab)], ids=["evalvae", "reference"]
)
def test_the_published_values_are_reproduced(ciede, to_lab):
    lab1, lab2 = np.array([p[0] for p in SHARMA]), np.array([p[1] for p in SHARMA])
    got = ciede(lab1, lab2)
    np.testing.assert_allclose(got, [p[2] for p in SHARMA], rtol=0, atol=5e-5)  # the table's 4 decimals
    np.testing.assert_allclose(ciede(lab2, lab1), got, rtol=0, atol=1e-12)  # symmetric
    # sRGB primaries, white and black under D65 (2°), as Lindbloom's and CIE's tables give them
    rgb = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0]], dtype=np.float64)
    tabulated = [[53.2408, 80.0925, 67.2032], [87.7347, -86.1827, 83.1793], [32.2970, 79.1875, -107.8602], [100, 0, 0]]
    np.testing.assert_allclose(to_lab(rgb), [*tabulated, [0, 0, 0]], rtol=0, atol=0.01)


def test_metric_equals_the_independent_reference():
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [128, 128, 128], [250, 200, 150], [20, 40, 60]])
    swatch = np.repeat(colours[:, None, :], 5, axis=1).astype(np.uint8)  # 6x5 swatches
    shifted = np.clip(swatch.astype(np.int64) + np.array([6, -4, 2]), 0, 255).astype(np.uint8)
    originals = [swatch, *(photo(40, 48, seed=i) for i in range(3))]
    noise = [np.random.default_rng(i).integers(-12, 13, x.shape) for i, x in enumerate(originals[1:])]
    noisy = [shifted, *(np.clip(x.astype(np.int64) + e, 0, 255).astype(np.uint8) for x, e in zip(originals[1:], noise))]
    for a, b in zip(originals, noisy):
        want = reference_ciede2000(reference_lab(a), reference_lab(b))
        np.testing.assert_allclose(delta_e_map(a, b), want, rtol=0, atol=DELTA_E_TOL)
        out = DeltaE()(_batch([a]), _batch([b]))
        assert out["delta_e"].item() == pytest.approx(want.mean(), rel=0, abs=DELTA_E_TOL)
        assert out["delta_e_p95"].item() == pytest.approx(np.percentile(want, 95), rel=0, abs=DELTA_E_TOL)
        assert out["delta_e"].item() > 0.5  # the change is visible, so the metric cannot be trivially 0


def test_a_run_with_metrics_color_writes_both_columns_and_their_info(tmp_path, image_dir):
    import json

    import pandas as pd

    from evalvae.run import run

    vae = ["+vae.v._target_=tests.run_standins.Identity", "+vae.v.gain=0.9", "+vae.v.nan_images=[2]"]
    dataset = ["dataset=folder", f"dataset.path={image_dir}", "dataset.resolution=32", "workers=0"]
    run(compose_run([*vae, "metrics=color", *dataset]), out_dir=tmp_path / "run")
    per_image = pd.read_parquet(tmp_path / "run" / "per_image.parquet")
    assert per_image["delta_e"].isna().sum() == 1 and bool(per_image["nonfinite"].iloc[2])
    finite = per_image.drop(index=2)
    assert (finite["delta_e"] > 0).all() and (finite["delta_e_p95"] >= finite["delta_e"]).all()
    entry = json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]["delta_e_p95"]
    assert entry["info"]["title"] == "ΔE2000 (95th pct)" and "D65" in entry["colour_space"]
