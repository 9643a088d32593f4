"""FD-DINOv2: dgm-eval's preprocessing as its code writes it with torchvision, and the distance against torch-fidelity's
``calculate_metrics`` on the same two folders, with the same random-init DINOv2 (the real ViT-L/14 and the official
torch.hub code cannot be had offline); unavailability (the contract, tests/metrics/test_contract.py, checks
identical inputs, batch and order)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as TF
from PIL import Image

from evalvae.metrics.fd_dinov2 import FDDINOv2, dgm_eval_pixels
from evalvae.metrics.weights import MetricUnavailable
from tests.helpers import photo

# float64 Fréchet distances of the same float32 features: measured 1.5e-6 relative (evalvae's nuclear-norm formula
# against torch-fidelity's scipy sqrtm, on a distance of 0.023); 1e-5 as the agreement asked
REL = 1e-5


def save_tiny_dinov2(path: Path) -> Path:
    """A random-init transformers ``Dinov2Model`` (2 layers, 32-d) pretrained at 518 px with 14 px patches, as
    ViT-L/14: its 37x37 position grid is resized for dgm-eval's 224 px input."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=518, patch_size=14
    )
    Dinov2Model(config).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_dinov2(tmp_path_factory) -> Path:
    return save_tiny_dinov2(tmp_path_factory.mktemp("dinov2") / "dinov2")


def official_grid(pos: torch.Tensor, h0: int, w0: int) -> torch.Tensor:
    """The official DINOv2 code's resize of a ``(1, 1 + M*M, d)`` position embedding for an ``h0 x w0`` patch grid
    (vision_transformer.py, interpolate_offset 0.1, no antialiasing), transcribed."""
    m = int((pos.shape[1] - 1) ** 0.5)
    grid = pos[:, 1:].float().reshape(1, m, m, -1).permute(0, 3, 1, 2)
    grid = torch.nn.functional.interpolate(
        grid, scale_factor=((w0 + 0.1) / m, (h0 + 0.1) / m), mode="bicubic", antialias=False
    )
    return torch.cat((pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, pos.shape[-1])), dim=1)


def test_the_position_grid_is_resized_as_the_official_code(tiny_dinov2):
    from transformers import Dinov2Model

    ours = FDDINOv2(model=str(tiny_dinov2)).extractor.model.embeddings
    theirs = Dinov2Model.from_pretrained(tiny_dinov2).embeddings  # transformers' own: to the size (16, 16)
    x = torch.zeros(1, 1 + 16 * 16, 32)
    want = official_grid(ours.position_embeddings, 16, 16)
    torch.testing.assert_close(ours.interpolate_pos_encoding(x, 224, 224), want, rtol=0, atol=0)
    assert not torch.allclose(theirs.interpolate_pos_encoding(x, 224, 224), want, atol=1e-3)


def dgm_eval_transform(image: Image.Image) -> torch.Tensor:
    """dgm-eval's DINOv2 transform (its default, not clean_resize), as its code writes it."""
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    x = TF.Compose([TF.Resize((224, 224), TF.InterpolationMode.BICUBIC), TF.ToTensor()])(image)
    return TF.Normalize(mean, std)(x)


@pytest.mark.parametrize(("h", "w"), [(40, 56), (300, 250)])  # up and down
def test_the_input_is_dgm_evals(h, w):
    images = torch.stack([torch.from_numpy(photo(h, w, seed=s)).permute(2, 0, 1) for s in range(2)])
    want = torch.stack([dgm_eval_transform(Image.fromarray(i.permute(1, 2, 0).numpy())) for i in images]).float()
    torch.testing.assert_close(dgm_eval_pixels(images), want, rtol=0, atol=1e-6)


def test_equals_torch_fidelity_on_two_folders(tiny_dinov2, tmp_path):
    import torch_fidelity
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from transformers import Dinov2Model

    class Extractor(FeatureExtractorBase):  # the same network and dgm-eval's transform, inside torch-fidelity
        def __init__(self, name, features_list, **_):
            super().__init__(name, features_list)
            self.model = Dinov2Model.from_pretrained(tiny_dinov2).eval()
            embeddings = self.model.embeddings  # the official code's grid resize, as torch.hub's DINOv2 runs it
            embeddings.interpolate_pos_encoding = lambda x, h, w: official_grid(
                embeddings.position_embeddings, h // 14, w // 14
            )

        @staticmethod
        def get_provided_features_list():
            return ("cls",)

        def forward(self, x):
            pixels = [dgm_eval_transform(Image.fromarray(i.permute(1, 2, 0).cpu().numpy())) for i in x]
            return (self.model(pixel_values=torch.stack(pixels).float()).pooler_output,)

    folders = []
    for k, noise in enumerate((0, 40)):  # 40 images a folder: more than the 32 feature dimensions
        folder = tmp_path / f"set{k}"
        folder.mkdir()
        rng = np.random.default_rng(k)
        for i in range(40):
            a = photo(48, 64, seed=i).astype(np.int16) + rng.integers(-noise, noise + 1, (48, 64, 3))
            Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(folder / f"{i:02d}.png")
        folders.append(folder)
    torch_fidelity.register_feature_extractor("evalvae-test-dinov2", Extractor)
    ref = torch_fidelity.calculate_metrics(
        input1=str(folders[0]),
        input2=str(folders[1]),
        fid=True,
        feature_extractor="evalvae-test-dinov2",
        feature_layer_fid="cls",
        cuda=False,
        cache=False,
        verbose=False,
    )["frechet_inception_distance"]

    metric = FDDINOv2(model=str(tiny_dinov2))
    states = []
    for folder in folders:
        images = torch.stack(
            [torch.from_numpy(np.array(Image.open(p))).permute(2, 0, 1) for p in sorted(folder.glob("*.png"))]
        )
        states.append(metric.new_state())
        metric.update(states[-1], images, list(range(len(images))))
    ours = metric.compute(*states)["rfd_dinov2"]
    print(f"FD-DINOv2 {ours['mean']!r} vs torch-fidelity {ref!r}")
    assert ours["n"] == 40 and ref > 0.001
    assert ours["mean"] == pytest.approx(ref, rel=REL)


def test_without_its_weights_it_is_unavailable_naming_the_argument(tiny_dinov2, tmp_path):
    with pytest.raises(MetricUnavailable, match=r"facebook/dinov2-large.*metrics\.dinov2\.model=DIR"):
        FDDINOv2()
    wrong = tmp_path / "wrong.pt"
    torch.save({"encoder.layer.0.norm1.weight": torch.ones(3)}, wrong)
    with pytest.raises(MetricUnavailable, match=r"metrics\.dinov2\.weights=.*wrong\.pt does not fit"):
        FDDINOv2(model=str(tiny_dinov2), weights=str(wrong))


def test_weights_from_a_file_are_the_ones_used(tiny_dinov2, tmp_path):
    from transformers import Dinov2Model

    state = Dinov2Model.from_pretrained(tiny_dinov2).state_dict()
    state = {k: v + 0.01 if k.endswith("layernorm.bias") else v for k, v in state.items()}
    torch.save(state, tmp_path / "weights.pt")
    plain = FDDINOv2(model=str(tiny_dinov2))
    moved = FDDINOv2(model=str(tiny_dinov2), weights=str(tmp_path / "weights.pt"))
    images = torch.randint(0, 256, (2, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    np.testing.assert_allclose(moved.features(images), plain.features(images) + 0.01, rtol=0, atol=1e-6)
    assert moved.protocol()["rfd_dinov2"]["weights"]["tensors_sha256"] != plain.extractor.weights_sha256
    assert "not facebook/dinov2-large's" in moved.extractor.note
