"""rFID and KID through the CLI against the reference implementations, with the real FID Inception.

Real TAEF2 reconstructs the first 12 Kodak photos at 256 px. The originals (as the protocol yields them) and the
reconstructions (8-bit, made with the same adapter in the same batch of one) are written as PNG
folders, and
* ``resize=legacy`` is compared with torch-fidelity's ``calculate_metrics`` on the two folders,
* ``resize=clean`` with clean-fid's own resize code (``make_resizer("PIL", False, "bicubic")``)
  feeding torch-fidelity's own network and forward (built by torch-fidelity from the same tensors), then
  clean-fid's ``frechet_distance`` and ``kernel_distance``.

KID is evalvae's ``kid_estimator=independent``, the estimator both tools use. It uses subsets of all
12 images, so every subset is the whole set and the three implementations' different random subset
draws cannot matter (tests/metrics/test_kid.py checks the draws against torch-fidelity's). Tolerance: 1e-4
relative. Measured: rFID 9.0e-6 (legacy) and 8.8e-6 (clean; with N=12 the covariances are rank-deficient,
which makes the matrix square root sensitive), KID 3.1e-6 (legacy) and 5e-15 (clean).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from evalvae.config import compose, instantiate
from evalvae.metrics import from_uint8, to_pixels
from evalvae.vae import load_vae
from tests.helpers import evalvae_main

pytestmark = pytest.mark.slow  # python -m pytest -m slow (CI runs it after the default suite)

INCEPTION = "fid/pt_inception-2015-12-05_torch-fidelity.pth"
REL = 1e-4
N = 12


@pytest.fixture(scope="module")
def folders(tmp_path_factory, assets, taef2_dir, real_weights):
    """(originals, reconstructions) PNG folders of 12 Kodak photos at 256 px and TAEF2."""
    root = tmp_path_factory.mktemp("fid-agreement")
    kodak = assets / "images" / "kodak"
    dataset = instantiate(compose(["dataset=folder", f"dataset.path={kodak}", f"dataset.limit={N}"]).dataset)
    cfg = compose(["+vae=taef2", f"vae.taef2.source={taef2_dir}"])
    vae = load_vae("taef2", cfg.vae.taef2, device="cpu")
    (root / "orig").mkdir()
    (root / "recon").mkdir()
    with torch.inference_mode():
        for i in range(len(dataset)):
            s = dataset[i]
            rec = to_pixels(vae.decode(vae.encode(from_uint8(s.image[None]))), True)[0].to(torch.uint8)
            Image.fromarray(s.image.permute(1, 2, 0).numpy()).save(root / "orig" / f"{Path(s.id).stem}.png")
            Image.fromarray(rec.permute(1, 2, 0).numpy()).save(root / "recon" / f"{Path(s.id).stem}.png")
    return root / "orig", root / "recon"


def cli_set_metrics(tmp_path, folders, taef2_dir, real_weights, resize: str) -> dict[str, float]:
    orig, _ = folders
    out = tmp_path / f"run-{resize}"
    fid = [f"metrics.fid.weights={real_weights / INCEPTION}", f"metrics.fid.resize={resize}"]
    fid.append("metrics.fid.kid_estimator=independent")  # the two tools' estimator (they assume independent samples)
    vae = ["+vae=taef2", f"vae.taef2.source={taef2_dir}"]
    args = ["run", *vae, "dataset=folder", f"dataset.path={orig}", "metrics=all"]
    args += [*fid, "~metrics.lpips", "batch_size=1", "workers=0", "channels_last=false", "report=false"]
    proc = evalvae_main([*args, f"cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={out}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = pd.read_csv(out / "summary.csv")
    assert not summary["note"].fillna("").str.contains("non-standard").any()
    return {m: float(summary.loc[summary["metric"] == m, "mean"].iloc[0]) for m in ("rfid", "kid")}


def inception_tensors(real_weights) -> dict[str, torch.Tensor]:
    return torch.load(real_weights / INCEPTION, map_location="cpu", weights_only=True)


def test_legacy_equals_torch_fidelity(tmp_path, folders, taef2_dir, real_weights, monkeypatch):
    import torch_fidelity
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    ours = cli_set_metrics(tmp_path, folders, taef2_dir, real_weights, "legacy")
    # torch-fidelity's network built from the same tensors (its path argument would unpickle with weights_only=False)
    state = inception_tensors(real_weights)
    monkeypatch.setattr(tfi, "load_state_dict_from_url", lambda *_, **__: state)
    options = {"kid_subset_size": N, "cuda": False, "cache": False, "verbose": False}
    ref = torch_fidelity.calculate_metrics(
        input1=str(folders[0]),
        input2=str(folders[1]),
        fid=True,
        kid=True,
        feature_extractor="inception-v3-compat",
        **options,
    )
    print(
        f"legacy: rfid {ours['rfid']!r} vs torch-fidelity {ref['frechet_inception_distance']!r}; "
        f"kid {ours['kid']!r} vs {ref['kernel_inception_distance_mean']!r}"
    )
    assert ours["rfid"] == pytest.approx(ref["frechet_inception_distance"], rel=REL)
    assert ours["kid"] == pytest.approx(ref["kernel_inception_distance_mean"], rel=REL)


def torch_fidelity_clean_features(real_weights, folder: Path) -> np.ndarray:
    """pool3 features of the PNGs in ``folder`` by clean-fid's resize and torch-fidelity's own network and forward.

    clean-fid's ``make_resizer("PIL", False, "bicubic")`` gives float32 299x299 images in [0, 255], which clean-fid
    feeds its network without re-quantization. torch-fidelity's ``FeatureExtractorInceptionV3`` is built by its own
    code from the same tensors, and its ``forward`` (normalisation, blocks, pooling) takes them as they are: only
    its uint8 input check is lifted, and its TF1 bilinear resize is checked to leave a 299x299 input unchanged.
    """
    import torch_fidelity.feature_extractor_inceptionv3 as tfi
    from cleanfid.resize import make_resizer

    resize = make_resizer("PIL", False, "bicubic", (299, 299))
    probe = torch.rand(1, 3, 299, 299, generator=torch.Generator().manual_seed(0)) * 255
    assert torch.equal(tfi.interpolate_bilinear_2d_like_tensorflow1x(probe, (299, 299), align_corners=False), probe)
    check = tfi.vassert
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tfi, "load_state_dict_from_url", lambda *_, **__: inception_tensors(real_weights))
        net = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"]).eval()
        mp.setattr(tfi, "vassert", lambda truth, message: None if "uint8" in message else check(truth, message))
        out = []
        for f in sorted(folder.glob("*.png")):
            x = torch.from_numpy(resize(np.array(Image.open(f).convert("RGB")))).permute(2, 0, 1)[None]
            assert x.dtype == torch.float32 and x.shape == (1, 3, 299, 299)
            with torch.inference_mode():
                (features,) = net(x)
            out.append(features.double().numpy())
    return np.concatenate(out)


def test_clean_equals_clean_fid_resize_and_torch_fidelity_network(tmp_path, folders, taef2_dir, real_weights):
    from cleanfid.fid import frechet_distance, kernel_distance

    ours = cli_set_metrics(tmp_path, folders, taef2_dir, real_weights, "clean")
    a, b = (torch_fidelity_clean_features(real_weights, f) for f in folders)
    assert a.shape == b.shape == (N, 2048)
    fid = frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    kid = kernel_distance(a, b, num_subsets=100, max_subset_size=1000)
    print(f"clean: rfid {ours['rfid']!r} vs clean-fid {fid!r}; kid {ours['kid']!r} vs {kid!r}")
    assert ours["rfid"] == pytest.approx(fid, rel=REL)
    assert ours["kid"] == pytest.approx(kid, rel=REL)
