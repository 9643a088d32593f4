"""The real LPIPS and FID networks, wired in: identification by tensors, safe loading (LPIPS's stated values with
these weights: tests/metrics/test_lpips.py).

Needs the networks built by the assets' make-weights ($EVALVAE_TEST_WEIGHTS); skipped when unset, failed under CI=true.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from evalvae.metrics.features import InceptionV3, MetricUnavailable
from evalvae.metrics.lpips import LPIPS

# The LPIPS reference pairs with the values stated in the assets' README (lpips package, real backbones, v0.1 heads).
STATED = {"alex": (0.721881, 0.137566), "vgg": (0.568613, 0.421664)}
BACKBONE_FILE = {"alex": "lpips/alexnet_features.pth", "vgg": "lpips/vgg16_features.pth"}
INCEPTION = "fid/pt_inception-2015-12-05_torch-fidelity.pth"


def example(assets, name: str) -> torch.Tensor:
    a = np.array(Image.open(assets / "images" / "lpips-examples" / f"ex_{name}.png").convert("RGB"))
    return torch.from_numpy(a).permute(2, 0, 1)[None].double()


def test_lpips_knows_the_network_whatever_file_holds_it(assets, real_weights, tmp_path):
    features = torch.load(real_weights / BACKBONE_FILE["alex"], weights_only=True)
    # torchvision's full file layout: the same features plus a classifier LPIPS never uses
    full = {**features, "classifier.1.weight": torch.randn(4096, 9216), "classifier.1.bias": torch.randn(4096)}
    torch.save(full, tmp_path / "alexnet-full.pth")
    save_file(features, tmp_path / "alexnet.safetensors")
    ref, p0 = example(assets, "ref"), example(assets, "p0")
    for f in ("alexnet-full.pth", "alexnet.safetensors"):
        metric = LPIPS(net="alex", backbone_weights=str(tmp_path / f))
        assert metric.weights.standard, f
        assert abs(metric(ref, p0)["lpips"].item() - STATED["alex"][0]) < 1e-5

    changed = dict(features)
    changed["features.0.bias"] = changed["features.0.bias"] + 1e-3
    torch.save(changed, tmp_path / "alexnet-tuned.pth")
    metric = LPIPS(net="alex", backbone_weights=str(tmp_path / "alexnet-tuned.pth"))
    assert not metric.weights.standard
    assert "non-standard weights" in metric.note and metric.protocol()["weights"]["standard"] is False


def test_lpips_refuses_files_that_are_not_the_backbone(real_weights, tmp_path):
    torch.save({"layer.weight": torch.zeros(3)}, tmp_path / "other.pth")
    not_backbone = r"metrics\.lpips\.backbone_weights=.*none of the LPIPS-alex backbone tensors"
    with pytest.raises(MetricUnavailable, match=not_backbone):
        LPIPS(net="alex", backbone_weights=str(tmp_path / "other.pth"))
    vgg_for_alex = real_weights / BACKBONE_FILE["vgg"]
    with pytest.raises(MetricUnavailable, match=r"metrics\.lpips\.backbone_weights"):
        LPIPS(net="alex", backbone_weights=str(vgg_for_alex))
    (tmp_path / "pickle.pth").write_bytes(b"not a torch file")
    with pytest.raises(MetricUnavailable, match=r"weights_only=True"):
        LPIPS(net="alex", backbone_weights=str(tmp_path / "pickle.pth"))


def test_inception_is_read_safely_and_its_features_equal_torch_fidelity_loading_the_same_file(real_weights):
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    path, calls, real_load = real_weights / INCEPTION, [], torch.load
    with pytest.MonkeyPatch.context() as mp:  # evalvae reads the file itself, never unpickling it
        mp.setattr(torch, "load", lambda *a, **k: calls.append(k.get("weights_only")) or real_load(*a, **k))
        ours = InceptionV3(weights=str(path), resize="legacy")
    assert calls == [True], f"torch.load calls (weights_only): {calls}"
    assert ours.weights.standard and ours.note == "" and ours.identity()["weights_standard"] is True
    # torch-fidelity's own loading, handed the tensors (its path argument would unpickle with weights_only=False)
    state = torch.load(path, map_location="cpu", weights_only=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tfi, "load_state_dict_from_url", lambda *_, **__: state)
        theirs = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"]).eval()
    x = torch.randint(0, 256, (3, 3, 120, 90), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        (expected,) = theirs(x)
    np.testing.assert_allclose(ours(x), expected.double().numpy(), rtol=0, atol=1e-6)


def test_inception_identified_by_the_tensors_pool3_uses(real_weights, tmp_path):
    state = torch.load(real_weights / INCEPTION, map_location="cpu", weights_only=True)
    # the official file holds the real classifier and other BatchNorm counters; pool3 never reads them
    official_like = {**state, "fc.weight": torch.randn(1008, 2048), "fc.bias": torch.randn(1008)}
    official_like = {k: (torch.tensor(7) if k.endswith("num_batches_tracked") else v) for k, v in official_like.items()}
    torch.save(official_like, tmp_path / "official-like.pth")
    no_fc = {k: v for k, v in state.items() if not k.startswith("fc.")}
    save_file(no_fc, tmp_path / "inception.safetensors")
    for f in ("official-like.pth", "inception.safetensors"):
        net = InceptionV3(weights=str(tmp_path / f))
        assert net.weights.standard, f
        assert net.weights_sha256 == InceptionV3(weights=str(real_weights / INCEPTION)).weights_sha256

    key = "Mixed_7c.branch_pool.conv.weight"
    tuned = {**state, key: state[key] * 1.01}
    torch.save(tuned, tmp_path / "tuned.pth")
    net = InceptionV3(weights=str(tmp_path / "tuned.pth"))
    assert not net.weights.standard and "non-standard weights" in net.note
