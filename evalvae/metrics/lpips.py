"""LPIPS per image, from the ``lpips`` package (its linear heads), fed inputs in [-1, 1]."""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import torch

from evalvae.errors import check_choice
from evalvae.io import sha256_file
from evalvae.metrics import info as shipped
from evalvae.metrics.base import PairMetric
from evalvae.metrics.weights import MetricUnavailable, NetworkWeights, find_weights, load_network, read_state_dict

log = logging.getLogger(__name__)

# torchvision's ImageNet backbones, as the lpips package loads them (file names carry a sha256 prefix).
BACKBONES = {
    "alex": ("alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
    "vgg": ("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth"),
}
# state_dict_sha256 of the ``features.*`` tensors of those files, the ones LPIPS uses (computed on
# feature-only copies of the same tensors; the classifier is not part of the hash).
# where $EVALVAE_WEIGHTS holds them: the features-only copy first, torchvision's full file also found
IN_WEIGHTS_FOLDER = {
    "alex": ("lpips/alexnet_features.pth", "lpips/alexnet-owt-7be5be79.pth"),
    "vgg": ("lpips/vgg16_features.pth", "lpips/vgg16-397923af.pth"),
}
STANDARD_BACKBONES = {
    "alex": "b46189e918b5839984e730473cc7329f473de17968d8502d355c0f0fd30797e7",
    "vgg": "441a19f14162bd7500dada8abf5ea122eae6bfb8beb0157b85974ee9aae8a060",
}
_FEATURE = re.compile(r"^features\.(\d+)\.(weight|bias)$")


def heads_path(net: str) -> Path:
    """The lpips package's v0.1 linear heads for ``net``."""
    import lpips

    return Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"


def build_lpips(net: str, backbone: dict[str, torch.Tensor], heads: dict[str, torch.Tensor]) -> torch.nn.Module:
    """``lpips.LPIPS`` for ``net`` holding exactly the given tensors (torchvision ``features.*`` names, package head names).

    The package is built with nothing loaded (random trunk, no heads read), then filled strictly,
    so the network never depends on a download or on a file the package would unpickle itself.
    """
    import lpips

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(pretrained|weight enum).*")
        model = lpips.LPIPS(pretrained=False, net=net, pnet_rand=True, verbose=False)
    state = model.state_dict()
    trunk = {}
    for key in state:
        parts = key.split(".")
        if parts[0] == "net" and parts[1].startswith("slice"):
            trunk[key] = f"features.{'.'.join(parts[2:])}"  # net.slice2.3.weight <- features.3.weight
    missing = [src for src in trunk.values() if src not in backbone]
    if missing:
        raise ValueError(f"the {net} backbone lacks {', '.join(missing[:4])}")
    # the heads are registered twice, as lin0..linN and as the ModuleList lins.0..N; the file names the former
    head = {k: re.sub(r"^lins\.(\d+)\.", r"lin\1.", k) for k in state if k.startswith("lin")}
    heads_missing = sorted({src for src in head.values() if src not in heads})
    if heads_missing:
        raise ValueError(f"the LPIPS heads lack {', '.join(heads_missing[:4])}")
    state.update({dst: backbone[src] for dst, src in trunk.items()})
    state.update({dst: heads[src] for dst, src in head.items()})
    model.load_state_dict(state, strict=True)
    return model.eval().requires_grad_(False)


class LPIPS(PairMetric):
    """Learned Perceptual Image Patch Similarity (Zhang et al. 2018), lower is better.

    The ``lpips`` package's v0.1 linear heads on torchvision's ImageNet backbone (``alex`` by
    default, or ``vgg``). Images are mapped from [0, 255] to [-1, 1], the range the package
    expects (feeding [0, 1] is a common source of wrong numbers). The backbone comes from
    ``backbone_weights`` (torchvision's full file or a ``features.*``-only state dict, ``.pth`` or
    ``.safetensors``), else ``$EVALVAE_WEIGHTS/lpips/`` when that is set, else torch's hub cache; without
    it the metric is unavailable. Backbones other than torchvision's ImageNet ones are reported as
    non-standard weights. An image with a side below :attr:`MIN_SIDES` (31 px for ``alex``, 16 px for
    ``vgg``) has no LPIPS: NaN, counted in summary.csv's note.
    """

    infos = (shipped.LPIPS,)
    NETS = tuple(BACKBONES)
    # The smallest image side each backbone takes: AlexNet's stride-4 11x11 convolution and three 3x3
    # stride-2 poolings leave no feature map below 31 px, VGG16's four poolings before relu5_3 below 16 px.
    MIN_SIDES = {"alex": 31, "vgg": 16}
    libraries = ("torch", "torchvision", "lpips")  # lpips builds its backbone from torchvision's

    def __init__(self, net: str = "alex", backbone_weights: str | None = None, batch_size: int = 16):
        self.net = check_choice("metrics.lpips.net", net, self.NETS)
        fname, url = BACKBONES[net]
        argument = "metrics.lpips.backbone_weights"
        path = find_weights(
            backbone_weights, (fname,), argument, f"LPIPS-{net} backbone weights", url, IN_WEIGHTS_FOLDER[net]
        )
        backbone, self.weights = load_network(
            path, argument, f"LPIPS-{net} backbone", lambda k: bool(_FEATURE.match(k)), STANDARD_BACKBONES[net]
        )
        heads = heads_path(net)
        self.heads_sha256 = sha256_file(heads)
        try:
            self.model = build_lpips(net, backbone, read_state_dict(heads, "lpips package heads"))
        except ValueError as e:
            raise MetricUnavailable(f"{argument}={path}: {e}") from None
        self.batch_size = batch_size

    @classmethod
    def from_model(cls, model: torch.nn.Module, net: str = "alex", batch_size: int = 16) -> LPIPS:
        """Wrap an already built ``lpips.LPIPS`` (for tests that build both sides the same way)."""
        self = cls.__new__(cls)
        self.net, self.model, self.batch_size, self.heads_sha256 = net, model.eval(), batch_size, "given"
        self.weights = NetworkWeights(f"LPIPS-{net} backbone", "(in memory)", "", "given", standard=False)
        return self

    @property
    def note(self) -> str:
        return self.weights.note

    @property
    def min_side(self) -> int:
        return self.MIN_SIDES[self.net]

    @property
    def min_side_reason(self) -> str:
        return f"the {self.net} backbone's poolings leave no feature map"

    @torch.inference_mode()
    def __call__(self, original: torch.Tensor, reconstruction: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.too_small(original):
            return self.undefined(original)
        self.model.to(original.device)
        out = []
        for o, r in zip(original.split(self.batch_size), reconstruction.split(self.batch_size)):
            x0 = (o / 127.5 - 1).float()
            x1 = (r / 127.5 - 1).float()
            out.append(self.model(x1, x0).reshape(-1).double())
        return {"lpips": torch.cat(out)}

    def protocol(self) -> dict:
        return {
            "implementation": f"lpips package v0.1 linear heads, torchvision {self.net} backbone",
            "net": self.net,
            "weights": self.weights.describe(),
            "heads_sha256": self.heads_sha256,
            "provenance": {"weights": self.weights.provenance()},
            "input_range": "[-1, 1] (pixels / 127.5 - 1)",
            "reduction": "spatial mean per image",
        }
