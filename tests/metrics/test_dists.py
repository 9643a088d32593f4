"""DISTS against the authors' own ``dists-pytorch`` package built by its own code with the same real VGG16, and
unavailability (the contract, tests/metrics/test_contract.py, checks identical inputs, batch, order and the device)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evalvae.metrics import build_metrics
from evalvae.metrics.dists import DISTS
from evalvae.metrics.weights import MetricUnavailable
from tests.helpers import compose_run
from tests.metrics.test_lpips import torchvision_file
from tests.metrics.test_weights import BACKBONE_FILE, example
from tests.prerequisites import require_module

# evalvae against the package on the same images: measured max |difference| 0.0 (the same float32 kernels);
# 1e-6 as the issue of agreement asks, ~10x float32 rounding at these values
TOL = 1e-6


@pytest.fixture(scope="module")
def package_dists(real_weights):
    """``DISTS_pytorch.DISTS`` as its users build it: the package's own network code, the VGG16 through torchvision's
    own pretrained loading handed the real features instead of a download, and the α/β of its own ``weights.pt``
    (which it looks for under ``sys.prefix``, not beside itself)."""
    import torchvision.models._api as tv_api

    package = require_module("DISTS_pytorch", "pip install dists-pytorch")
    state = torchvision_file(real_weights, "vgg")
    asked = []
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecated pretrained=True
        mp.setattr(tv_api, "load_state_dict_from_url", lambda url, *_, **__: asked.append(url) or state)
        model = package.DISTS(load_weights=False)
    assert [Path(u).name for u in asked] == ["vgg16-397923af.pth"]
    ab = torch.load(Path(package.__file__).parent / "weights.pt", map_location="cpu", weights_only=True)
    model.alpha.data, model.beta.data = ab["alpha"], ab["beta"]
    return model.eval(), real_weights / BACKBONE_FILE["vgg"]


def kodak(assets, n: int = 3, side: int = 96) -> torch.Tensor:
    out = []
    for path in sorted((assets / "images" / "kodak").glob("kodim*.png"))[:n]:
        a = np.asarray(Image.open(path).convert("RGB"))[200 : 200 + side, 300 : 300 + side]
        out.append(torch.from_numpy(a.copy()).permute(2, 0, 1))
    return torch.stack(out).double()


def test_equals_the_authors_package_on_the_lpips_examples_and_kodak(package_dists, assets):
    model, backbone = package_dists
    ours = DISTS(backbone_weights=str(backbone))
    assert ours.weights.standard and ours.note == ""
    ref = torch.cat([example(assets, "ref")] * 2)
    distorted = torch.cat([example(assets, "p0"), example(assets, "p1")])
    x = kodak(assets)
    noisy = (x + torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 10).clamp(
        0, 255
    )
    for original, reconstruction in ((ref, distorted), (x, noisy.round())):
        got = ours(original, reconstruction)["dists"]
        with torch.no_grad():
            want = model((reconstruction / 255).float(), (original / 255).float()).double()
        assert got.dtype == torch.float64 and got.shape == (len(original),)
        torch.testing.assert_close(got, want, rtol=0, atol=TOL)
    # the examples' p1 is the closer distortion, for DISTS as for LPIPS (0.2250 vs 0.3879 measured)
    first, second = ours(ref, distorted)["dists"].tolist()
    assert second < first and 0.2 < second < first < 0.45


def test_missing_vgg16_is_unavailable_naming_the_argument(tmp_path, monkeypatch):
    monkeypatch.delenv("EVALVAE_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(MetricUnavailable, match=r"vgg16-397923af\.pth.*metrics\.dists\.backbone_weights=PATH"):
        DISTS()
    with pytest.raises(MetricUnavailable, match=r"metrics\.dists\.backbone_weights=/nope"):
        DISTS(backbone_weights="/nope")
    (metric,) = [m for m in build_metrics(compose_run(["metrics=dists"]).metrics) if m.infos[0].name == "dists"]
    assert metric.protocol()["available"] is False and "metrics.dists.backbone_weights" in metric.reason


def test_another_vgg16_is_named_non_standard(real_weights, tmp_path):
    state = torch.load(real_weights / BACKBONE_FILE["vgg"], map_location="cpu", weights_only=True)
    state["features.0.bias"] = state["features.0.bias"] + 0.01
    torch.save(state, tmp_path / "vgg.pth")
    metric = DISTS(backbone_weights=str(tmp_path / "vgg.pth"))
    assert not metric.protocol()["weights"]["standard"]
    assert metric.note.startswith("non-standard weights: DISTS VGG16 tensors sha256")
