"""LPIPS against the lpips package built by its own code with the real backbones, its input range, and unavailability."""

from __future__ import annotations

import warnings
from pathlib import Path

import lpips
import pytest
import torch
import torchvision

from evalvae.metrics.features import MetricUnavailable
from evalvae.metrics.lpips import BACKBONES, LPIPS
from tests.metrics.test_pixel import pair
from tests.metrics.test_weights import BACKBONE_FILE, STATED, example

# evalvae against the package's own model on the same photos: measured max |difference| 0.0 for alex and vgg
# (the same float32 kernels on the same batch); 1e-6 is ~10x float32 rounding at these values, should the two
# ever take different convolution paths.
LPIPS_TOL = 1e-6
# torchvision's ImageNet classifier shapes: the package builds the whole network, then keeps the features
CLASSIFIER = {
    "alex": {"classifier.1": (4096, 9216), "classifier.4": (4096, 4096), "classifier.6": (1000, 4096)},
    "vgg": {"classifier.0": (4096, 25088), "classifier.3": (4096, 4096), "classifier.6": (1000, 4096)},
}


def torchvision_file(real_weights, net: str) -> dict[str, torch.Tensor]:
    """What torchvision's ImageNet ``net`` file holds: the real ``features.*`` tensors, and zeros that take no memory
    for the classifier (which LPIPS and DISTS never use)."""
    state = dict(torch.load(real_weights / BACKBONE_FILE[net], map_location="cpu", weights_only=True))
    for name, shape in CLASSIFIER[net].items():
        state[f"{name}.weight"] = torch.zeros(()).expand(shape)
        state[f"{name}.bias"] = torch.zeros(()).expand(shape[:1])
    return state


@pytest.fixture(scope="module", params=["alex", "vgg"])
def package_lpips(request, real_weights):
    """``lpips.LPIPS(net=...)`` as its users build it: the package's own network code and v0.1 heads, and the
    ImageNet backbone through torchvision's own pretrained loading, handed the real features instead of a download."""
    import torchvision.models._api as tv_api

    net = request.param
    state = torchvision_file(real_weights, net)
    asked = []
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecated pretrained=True
        mp.setattr(tv_api, "load_state_dict_from_url", lambda url, *_, **__: asked.append(url) or state)
        model = lpips.LPIPS(net=net, verbose=False).eval()
    assert [Path(u).name for u in asked] == [BACKBONES[net][0]]
    return net, model, real_weights / BACKBONE_FILE[net]


def test_the_package_model_reproduces_the_stated_values(package_lpips, assets):
    """The reference itself: the assets' LPIPS example pairs with the values their README states."""
    net, model, _ = package_lpips
    ref, p0, p1 = (example(assets, n) / 127.5 - 1 for n in ("ref", "p0", "p1"))
    with torch.no_grad():
        got = [model(p.float(), ref.float()).item() for p in (p0, p1)]
    assert got == pytest.approx(STATED[net], abs=1e-5)  # stated to 6 decimals


def test_equals_the_lpips_package_fed_minus_one_to_one_and_reproduces_the_stated_values(package_lpips, assets):
    net, model, backbone = package_lpips
    ours = LPIPS(net=net, backbone_weights=str(backbone))
    ref, p0, p1 = (example(assets, n) for n in ("ref", "p0", "p1"))
    got = torch.cat([ours(ref, p0)["lpips"], ours(ref, p1)["lpips"]])
    torch.testing.assert_close(got, torch.tensor(STATED[net], dtype=torch.float64), rtol=0, atol=1e-5)
    # batch and order: tests/metrics/test_contract.py (case lpips-alex, these weights)
    assert ours.weights.standard and ours.note == ""
    assert ours.protocol()["weights"] == {"standard": True, "tensors_sha256": ours.weights.tensors_sha256}
    for noise in (3.0, 40.0):
        o, r = pair(n=3, h=64, w=64, noise=noise)
        got = ours(o, r)["lpips"]
        with torch.no_grad():
            ref = model((r / 127.5 - 1).float(), (o / 127.5 - 1).float()).flatten().double()
        torch.testing.assert_close(got, ref, rtol=0, atol=LPIPS_TOL)
        assert (got > 1e-4).all(), "distorted images must score above 0"
    with torch.no_grad():
        wrong = model((r / 255).float(), (o / 255).float()).flatten().double()
    assert (got - wrong).abs().max() > 100 * LPIPS_TOL, "feeding [0, 1] must give different numbers"


def test_backbone_weights_from_a_file_are_the_ones_used(tmp_path):
    torch.manual_seed(1)
    backbone = torchvision.models.alexnet()
    path = tmp_path / "my-alexnet.pth"
    torch.save(backbone.state_dict(), path)
    hub_before = torch.hub.get_dir()
    metric = LPIPS(net="alex", backbone_weights=str(path))
    torch.testing.assert_close(metric.model.net.slice5[0].weight, backbone.features[10].weight)
    torch.testing.assert_close(metric.model.net.slice1[0].weight, backbone.features[0].weight)
    assert "[-1, 1]" in metric.protocol()["input_range"]
    assert metric.protocol()["weights"]["standard"] is False and "non-standard weights" in metric.note
    assert torch.hub.get_dir() == hub_before


def test_missing_backbone_is_unavailable_with_an_actionable_message(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(MetricUnavailable, match=r"alexnet-owt-7be5be79\.pth.*metrics\.lpips\.backbone_weights=PATH"):
        LPIPS()
    with pytest.raises(MetricUnavailable, match=r"metrics\.lpips\.backbone_weights=/nope"):
        LPIPS(backbone_weights="/nope")
