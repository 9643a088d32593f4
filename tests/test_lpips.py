"""LPIPS against the lpips package (same weights on both sides), its input range, and unavailability."""

from __future__ import annotations

import lpips
import pytest
import torch
import torchvision

from evalvae.metrics.features import MetricUnavailable
from evalvae.metrics.lpips import LPIPS
from tests.helpers import photo

LPIPS_TOL = 1e-5


def pixels(n=3, h=64, w=64, noise=20.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    o = torch.stack([torch.from_numpy(photo(h, w, seed + i)).permute(2, 0, 1) for i in range(n)]).double()
    r = (o + torch.randn(o.shape, generator=g, dtype=torch.float64) * noise).clamp(0, 255).round()
    return o, r


@pytest.fixture(scope="module", params=["alex", "vgg"])
def random_backbone_lpips(request):
    """The package's real linear heads on an explicitly random backbone (no ImageNet weights offline)."""
    torch.manual_seed(0)
    return request.param, lpips.LPIPS(net=request.param, pnet_rand=True, verbose=False).eval()


def test_equals_lpips_package_fed_minus_one_to_one(random_backbone_lpips):
    net, model = random_backbone_lpips
    o, r = pixels()
    ours = LPIPS.from_model(model, net)(o, r)
    with torch.no_grad():
        ref = model((r / 127.5 - 1).float(), (o / 127.5 - 1).float()).flatten().double()
    torch.testing.assert_close(ours, ref, rtol=0, atol=LPIPS_TOL)
    with torch.no_grad():
        wrong = model((r / 255).float(), (o / 255).float()).flatten().double()
    assert (ours - wrong).abs().max() > 10 * LPIPS_TOL, "feeding [0, 1] must give different numbers"


def test_invariances(random_backbone_lpips):
    net, model = random_backbone_lpips
    metric = LPIPS.from_model(model, net, batch_size=2)
    o, r = pixels(n=5)
    whole = metric(o, r)
    torch.testing.assert_close(
        torch.cat([metric(o[i : i + 1], r[i : i + 1]) for i in range(5)]), whole, rtol=0, atol=1e-6
    )
    perm = torch.tensor([4, 2, 0, 3, 1])
    torch.testing.assert_close(metric(o[perm], r[perm]), whole[perm], rtol=0, atol=1e-6)
    assert metric(o, o.clone()).abs().max() < 1e-6
    _, worse = pixels(n=5, noise=60.0)
    assert (metric(o, worse) > whole).all()


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
