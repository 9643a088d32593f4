"""Colour fidelity (CIEDE2000 ΔE): the published test pairs, skimage on known colours, invariances, NaN rows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from evalvae.metrics import build_metrics, result_columns
from evalvae.metrics.color import DeltaE, ciede2000, delta_e_map, lab
from evalvae.metrics.info import info_of
from evalvae.recon.loop import score
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


def test_ciede2000_reproduces_the_published_test_pairs():
    lab1 = np.array([p[0] for p in SHARMA])
    lab2 = np.array([p[1] for p in SHARMA])
    expected = np.array([p[2] for p in SHARMA])
    got = ciede2000(lab1, lab2)
    np.testing.assert_allclose(got, expected, atol=5e-5)  # the table's 4 decimals
    np.testing.assert_allclose(ciede2000(lab2, lab1), got, atol=1e-12)  # symmetric


def test_lab_of_known_srgb_colours():
    # sRGB primaries and white under D65 (2°), as Lindbloom's and CIE's tables give them
    rgb = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0]], dtype=np.float64)
    expected = np.array(
        [
            [53.2408, 80.0925, 67.2032],
            [87.7347, -86.1827, 83.1793],
            [32.2970, 79.1875, -107.8602],
            [100, 0, 0],
            [0, 0, 0],
        ]
    )
    np.testing.assert_allclose(lab(rgb), expected, atol=0.01)


def test_metric_equals_skimage_on_known_colours():
    from skimage.color import deltaE_ciede2000, rgb2lab

    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [128, 128, 128], [250, 200, 150], [20, 40, 60]])
    a = np.repeat(colours[:, None, :], 5, axis=1).reshape(6, 5, 3).astype(np.uint8)  # 6x5 swatches
    b = a.astype(np.int64) + np.array([6, -4, 2])
    b = np.clip(b, 0, 255).astype(np.uint8)
    want = deltaE_ciede2000(rgb2lab(a / 255.0), rgb2lab(b / 255.0), channel_axis=-1)
    out = DeltaE()(_batch([a]), _batch([b]))
    assert out["delta_e"].item() == pytest.approx(want.mean(), abs=1e-9)
    assert out["delta_e_p95"].item() == pytest.approx(np.percentile(want, 95), abs=1e-9)
    assert out["delta_e"].item() > 0.5  # the shift is visible, so the metric cannot be trivially 0


def test_identical_images_give_zero_and_batch_size_does_not_matter():
    images = [photo(48, 40, seed=i) for i in range(4)]
    noisy = [
        np.clip(x.astype(int) + np.random.default_rng(i).integers(-9, 10, x.shape), 0, 255)
        for i, x in enumerate(images)
    ]
    a, b = _batch(images), _batch(noisy)
    same = DeltaE()(a, a)
    assert same["delta_e"].tolist() == [0.0] * 4 and same["delta_e_p95"].tolist() == [0.0] * 4
    whole = DeltaE()(a, b)
    parts = [DeltaE()(a[i : i + 1], b[i : i + 1]) for i in range(4)]
    for k in ("delta_e", "delta_e_p95"):
        np.testing.assert_allclose(whole[k].numpy(), [p[k].item() for p in parts], rtol=1e-12)
        assert (whole[k] > 0).all()
    assert (whole["delta_e_p95"] >= whole["delta_e"]).all()
    m = delta_e_map(images[0], noisy[0])
    assert m.shape == (48, 40)


def test_nonfinite_reconstructions_get_nan_from_the_recon_loop():
    a = _batch([photo(16, 16, seed=i) for i in range(3)])
    finite = torch.tensor([True, False, True])
    values = score([DeltaE()], a, a.clone(), finite)
    assert values["delta_e"][0] == 0.0 and values["delta_e"][2] == 0.0
    assert math.isnan(values["delta_e"][1]) and math.isnan(values["delta_e_p95"][1])


def test_metrics_color_config_builds_the_metric_with_its_info():
    cfg = compose_run(["+vae=taesd", "metrics=color"])
    built = build_metrics(cfg.metrics)
    color = [m for m in built if isinstance(m, DeltaE)]
    assert len(color) == 1 and result_columns(color[0]) == ["delta_e", "delta_e_p95"]
    assert info_of(color[0], "delta_e_p95").higher_is_better is False
    assert "color" not in compose_run(["+vae=taesd", "metrics=all"]).metrics


def test_a_run_with_metrics_color_writes_both_columns_and_their_info(tmp_path, image_dir):
    import json

    import pandas as pd

    from evalvae.run import run

    cfg = compose_run(
        [
            "+vae.v._target_=tests.run_standins.Identity",
            "+vae.v.gain=0.9",
            "+vae.v.nan_images=[2]",
            "metrics=color",
            "dataset=folder",
            f"dataset.path={image_dir}",
            "dataset.resolution=32",
            "workers=0",
        ]
    )
    run(cfg, out_dir=tmp_path / "run")
    per_image = pd.read_parquet(tmp_path / "run" / "per_image.parquet")
    assert per_image["delta_e"].isna().sum() == 1 and bool(per_image["nonfinite"].iloc[2])
    finite = per_image.drop(index=2)
    assert (finite["delta_e"] > 0).all() and (finite["delta_e_p95"] >= finite["delta_e"]).all()
    entry = json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]["delta_e_p95"]
    assert entry["info"]["title"] == "ΔE2000 (95th pct)" and "D65" in entry["colour_space"]
