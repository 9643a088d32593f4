"""DISTS per image (Ding, Ma, Wang and Simoncelli 2020), torchmetrics' network on a VGG16 evalvae reads itself."""

from __future__ import annotations

import re
import threading
from unittest import mock

import torch

from evalvae.io import sha256_file
from evalvae.metrics import info as shipped
from evalvae.metrics.base import PairMetric
from evalvae.metrics.lpips import BACKBONES, IN_WEIGHTS_FOLDER, STANDARD_BACKBONES
from evalvae.metrics.weights import MetricUnavailable, find_weights, load_network

_FEATURE = re.compile(r"^features\.(\d+)\.(weight|bias)$")
_BUILD = threading.Lock()  # the network is built with torchmetrics' VGG16 constructor swapped for an empty one


def build_dists(backbone: dict[str, torch.Tensor]) -> torch.nn.Module:
    """torchmetrics' ``DISTSNetwork`` holding exactly the given VGG16 ``features.*`` tensors and its bundled α/β.

    torchmetrics builds the network around ``torchvision.models.vgg16(weights=DEFAULT)``, which downloads;
    here the constructor gets a VGG16 without storage (on the meta device: no 138M random numbers drawn),
    and the given tensors are assigned strictly after.
    """
    import torchvision
    from torchmetrics.functional.image import dists

    def empty_vgg16(weights=None):
        with torch.device("meta"):
            return torchvision.models.vgg16(weights=None)

    with _BUILD, mock.patch.object(dists, "vgg16", empty_vgg16):
        model = dists.DISTSNetwork(load_weights=True)
    state = model.state_dict()
    trunk = {}
    for key in state:  # stage2.5.weight <- features.5.weight: the stages keep VGG16's layer numbers
        stage, _, rest = key.partition(".")
        if stage.startswith("stage") and rest.split(".")[-1] in ("weight", "bias") and "filter" not in rest:
            trunk[key] = f"features.{rest}"
    missing = [src for src in trunk.values() if src not in backbone]
    if missing:
        raise ValueError(f"the VGG16 backbone lacks {', '.join(missing[:4])}")
    state.update({dst: backbone[src].float() for dst, src in trunk.items()})
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False)


class DISTS(PairMetric):
    """Deep Image Structure and Texture Similarity, lower is better; 0 for identical images.

    torchmetrics' ``DISTSNetwork`` with its bundled α/β (the authors' ``weights.pt``, byte for byte the
    tensors of their ``dists-pytorch`` package) on torchvision's ImageNet VGG16, fed images in [0, 1].
    The VGG16 comes from ``backbone_weights`` (torchvision's full file or a ``features.*``-only state dict),
    else ``$EVALVAE_WEIGHTS/lpips/`` (the file LPIPS-vgg reads), else torch's hub cache; without it the
    metric is unavailable. A VGG16 other than torchvision's ImageNet one is reported as non-standard weights.
    Every image size is defined (the L2 poolings pad), so DISTS has no smallest side.
    """

    infos = (shipped.DISTS,)
    libraries = ("torch", "torchvision", "torchmetrics")

    def __init__(self, backbone_weights: str | None = None, batch_size: int = 16):
        argument = "metrics.dists.backbone_weights"
        fname, url = BACKBONES["vgg"]
        path = find_weights(backbone_weights, (fname,), argument, "DISTS VGG16 weights", url, IN_WEIGHTS_FOLDER["vgg"])
        backbone, self.weights = load_network(
            path, argument, "DISTS VGG16", lambda k: bool(_FEATURE.match(k)), STANDARD_BACKBONES["vgg"]
        )
        try:
            self.model = build_dists(backbone)
        except ValueError as e:
            raise MetricUnavailable(f"{argument}={path}: {e}") from None
        from torchmetrics.functional.image import dists

        self.alpha_beta_sha256 = sha256_file(dists._PATH_WEIGHT_DISTS)
        self.batch_size = batch_size

    @property
    def note(self) -> str:
        return self.weights.note

    @torch.inference_mode()
    def __call__(self, original: torch.Tensor, reconstruction: torch.Tensor) -> dict[str, torch.Tensor]:
        self.model.to(original.device)
        out = []
        for o, r in zip(original.split(self.batch_size), reconstruction.split(self.batch_size)):
            out.append(self.model((r / 255).float(), (o / 255).float()).reshape(-1).double())
        return {"dists": torch.cat(out)}

    def protocol(self) -> dict:
        return {
            "implementation": "torchmetrics DISTSNetwork, its bundled alpha/beta, torchvision VGG16",
            "weights": self.weights.describe(),
            "alpha_beta_sha256": self.alpha_beta_sha256,
            "provenance": {"weights": self.weights.provenance()},
            "input_range": "[0, 1] (pixels / 255), ImageNet mean/std inside the network",
            "reduction": "per image",
        }
