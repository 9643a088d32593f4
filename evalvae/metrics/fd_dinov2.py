"""FD-DINOv2 (Stein et al. 2023): the Fréchet distance of DINOv2 ViT-L/14 features, with dgm-eval's preprocessing.

dgm-eval (layer6ai-labs/dgm-eval, the paper's code) feeds DINOv2 each image resized by PIL to 224x224,
bicubic (``torchvision.transforms.Resize((224, 224), BICUBIC)`` on the PIL image, its default; not
``--clean_resize``), scaled to [0, 1] and normalised with ImageNet's mean and std, and takes the model's
output: the class token after the final layer norm (transformers' ``pooler_output``). The distance is
evalvae's Fréchet distance (the rFID core) of those 1024-d features.

The network is transformers' ``Dinov2Model`` (``facebook/dinov2-large``, the official ViT-L/14 weights
in transformers' layout), with the position embeddings resized as the official torch.hub code resizes them
(what dgm-eval runs: :class:`HubDinov2Embeddings`), from the hub, a local folder (``metrics.dinov2.model=``), or a state-dict file
in that layout over the folder's config (``metrics.dinov2.weights=``), read with safetensors or
``torch.load(weights_only=True)``. Without it, FD-DINOv2 is unavailable, never computed on random weights.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers.models.dinov2.modeling_dinov2 import Dinov2Embeddings

from evalvae.checkpoints import local_then_hub, state_dict_sha256
from evalvae.metrics import info as shipped
from evalvae.metrics.distribution import FIDKID
from evalvae.metrics.features import FeatureExtractor, quiet_transformers
from evalvae.metrics.weights import MetricUnavailable, read_state_dict

DINOV2_L14 = "facebook/dinov2-large"
SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def dgm_eval_pixels(images: torch.Tensor) -> torch.Tensor:
    """``(N, 3, 224, 224)`` float32 model input of ``(N, 3, H, W)`` uint8 images, as dgm-eval's DINOv2 transform:
    PIL bicubic resize of the 8-bit image to 224x224, [0, 1], ImageNet mean and std."""
    out = np.empty((len(images), SIZE, SIZE, 3), np.float32)
    for i, img in enumerate(images.cpu().permute(0, 2, 3, 1).numpy()):
        resized = Image.fromarray(img, mode="RGB").resize((SIZE, SIZE), Image.Resampling.BICUBIC)
        out[i] = np.asarray(resized, dtype=np.float32) / 255.0
    x = torch.from_numpy(out).permute(0, 3, 1, 2)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - mean) / std


class HubDinov2Embeddings(Dinov2Embeddings):
    """transformers' ``Dinov2Embeddings``, resizing its position embeddings as the official DINOv2 code
    (``vision_transformer.py``'s ``interpolate_pos_encoding``, which dgm-eval and torch-fidelity load through
    torch.hub) does: bicubic, no antialiasing, by the scale factors ``(w0 + 0.1) / M`` and ``(h0 + 0.1) / M``
    of an ``M x M`` grid, in float32. transformers resizes to the size ``(h0, w0)`` instead, which samples other
    points of the grid: at 224 px, ViT-L/14's 37x37 grid becomes 16x16 either way, with other values."""

    def interpolate_pos_encoding(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        pos = self.position_embeddings
        n, m = x.shape[1] - 1, pos.shape[1] - 1
        if n == m and height == width:
            return pos
        ph, pw = self.patch_embeddings.patch_size
        h0, w0 = height // ph, width // pw
        side = int(math.sqrt(m))
        grid = pos[:, 1:].float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
        scale = ((w0 + 0.1) / side, (h0 + 0.1) / side)  # the official code's order (its inputs here are square)
        grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=False)
        grid = grid.to(pos.dtype).permute(0, 2, 3, 1).reshape(1, -1, pos.shape[-1])
        return torch.cat((pos[:, :1], grid), dim=1)


class DINOv2Features(FeatureExtractor):
    """DINOv2's class token after its final layer norm, of dgm-eval's 224x224 input (:func:`dgm_eval_pixels`)."""

    libraries = ("torch", "transformers", "Pillow")

    def __init__(self, model: str = DINOV2_L14, weights: str | None = None, batch_size: int = 32):
        try:
            from transformers import Dinov2Config, Dinov2Model
        except ImportError as e:
            raise MetricUnavailable(f"transformers is needed for FD-DINOv2 ({e})") from None
        local = Path(model).expanduser().is_dir()
        try:
            with quiet_transformers():
                if weights:
                    config = local_then_hub(
                        lambda lo: Dinov2Config.from_pretrained(model, local_files_only=lo), may_download=not local
                    )
                else:
                    self.model = local_then_hub(
                        lambda lo: Dinov2Model.from_pretrained(model, local_files_only=lo), may_download=not local
                    )
        except Exception as e:  # offline, missing or gated: unavailable, with the reason
            raise MetricUnavailable(
                f"FD-DINOv2's DINOv2 {model!r} could not be loaded ({type(e).__name__}); download it where the hub is "
                "reachable, or set metrics.dinov2.model=DIR (a local transformers DINOv2 folder)"
            ) from None
        if weights:
            state = read_state_dict(Path(weights).expanduser(), "metrics.dinov2.weights")
            with torch.device("meta"):
                self.model = Dinov2Model(config)
            try:
                self.model.load_state_dict(state, strict=True, assign=True)
            except RuntimeError as e:
                raise MetricUnavailable(
                    f"metrics.dinov2.weights={weights} does not fit {model!r}'s DINOv2 "
                    f"({str(e).strip().splitlines()[0]}); give a state dict in transformers' Dinov2Model layout"
                ) from None
        self.model.eval().requires_grad_(False)
        self.model.embeddings.__class__ = HubDinov2Embeddings  # the official code's grid resize
        self.module, self.model_id, self.weights_path, self.batch_size = self.model, model, weights, batch_size
        self.name = "dinov2-" + model.rstrip("/").split("/")[-1]
        self.dim = int(self.model.config.hidden_size)
        self.weights_sha256 = state_dict_sha256(self.model.state_dict())
        self.standard = model == DINOV2_L14 and not weights
        self.note = (
            "" if self.standard else f"DINOv2 {model}{' + ' + str(weights) if weights else ''}, not {DINOV2_L14}'s"
        )

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        out = [
            self.model(pixel_values=dgm_eval_pixels(chunk).to(self.device)).pooler_output.double().cpu().numpy()
            for chunk in images.split(self.batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, self.dim))

    def identity(self) -> dict:
        return {
            "name": self.name,
            "model": self.model_id,
            "weights_sha256": self.weights_sha256,
            "resize": "PIL bicubic to 224x224 of the 8-bit image, [0, 1], ImageNet mean/std (dgm-eval's default)",
            "implementation": "transformers Dinov2Model, pooler_output (class token after the final layer norm); "
            "position embeddings resized as the official torch.hub code (scale factors (16 + 0.1) / M)",
        }


class FDDINOv2(FIDKID):
    """FD-DINOv2, lower is better: :class:`~evalvae.metrics.distribution.FIDKID`'s Fréchet distance on
    :class:`DINOv2Features` (no KID), under the result name ``rfd_dinov2``."""

    infos = (shipped.RFD_DINOV2,)

    def __init__(self, model: str = DINOV2_L14, weights: str | None = None, batch_size: int = 32):
        super().__init__(
            extractor={
                "_target_": f"{__name__}.DINOv2Features",
                "model": model,
                "weights": weights,
                "batch_size": batch_size,
            },
            kid=False,
        )
        self.infos = (shipped.RFD_DINOV2,)

    def compute(self, real, fake) -> dict[str, dict]:
        return {"rfd_dinov2": super().compute(real, fake)["rfid"]}

    def protocol(self) -> dict:
        out = super().protocol()["rfid"]
        out["weights"] = {"standard": self.extractor.standard, "tensors_sha256": self.extractor.weights_sha256}
        return {"rfd_dinov2": out}
