"""LPIPS per image, from the ``lpips`` package (its linear heads), fed inputs in [-1, 1]."""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path

import torch

from evalvae.errors import check_choice
from evalvae.metrics.base import PairMetric
from evalvae.metrics.features import find_weights

log = logging.getLogger(__name__)

# torchvision's ImageNet backbones, as the lpips package loads them (file names carry a sha256 prefix).
BACKBONES = {
    "alex": ("alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
    "vgg": ("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth"),
}


@contextlib.contextmanager
def _hub_dir_holding(path: Path, name: str):
    """A temporary torch hub directory where ``checkpoints/<name>`` is ``path``, so torchvision loads it."""
    previous = torch.hub.get_dir()
    with tempfile.TemporaryDirectory(prefix="evalvae-hub-") as tmp:
        (Path(tmp) / "checkpoints").mkdir()
        (Path(tmp) / "checkpoints" / name).symlink_to(path.resolve())
        torch.hub.set_dir(tmp)
        try:
            yield
        finally:
            torch.hub.set_dir(previous)


class LPIPS(PairMetric):
    """Learned Perceptual Image Patch Similarity (Zhang et al. 2018), lower is better.

    The ``lpips`` package's v0.1 linear heads on torchvision's ImageNet backbone (``alex`` by
    default, or ``vgg``). Images are mapped from [0, 255] to [-1, 1], the range the package
    expects (feeding [0, 1] is a common source of wrong numbers). The backbone comes from
    ``backbone_weights`` or torch's hub cache; without it the metric is unavailable.
    """

    name, higher_is_better = "lpips", False
    NETS = tuple(BACKBONES)

    def __init__(self, net: str = "alex", backbone_weights: str | None = None, batch_size: int = 16):
        import lpips

        self.net = check_choice("metrics.lpips.net", net, self.NETS)
        fname, url = BACKBONES[net]
        path, self.backbone_sha256 = find_weights(backbone_weights, (fname,), "metrics.lpips.backbone_weights", f"LPIPS-{net} backbone weights", url)
        expected = fname.rsplit("-", 1)[1].split(".")[0]
        if not self.backbone_sha256.startswith(expected):
            log.warning("%s is not torchvision's %s weights (sha256 %s...); LPIPS will not be comparable", path, net, self.backbone_sha256[:12])
        with _hub_dir_holding(path, fname):
            self.model = lpips.LPIPS(net=net, verbose=False).eval().requires_grad_(False)
        self.batch_size = batch_size

    @classmethod
    def from_model(cls, model: torch.nn.Module, net: str = "alex", batch_size: int = 16) -> LPIPS:
        """Wrap an already built ``lpips.LPIPS`` (for tests that build both sides the same way)."""
        self = cls.__new__(cls)
        self.net, self.model, self.batch_size, self.backbone_sha256 = net, model.eval(), batch_size, "given"
        return self

    @torch.inference_mode()
    def __call__(self, original: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        self.model.to(original.device)
        out = []
        for o, r in zip(original.split(self.batch_size), reconstruction.split(self.batch_size)):
            x0 = (o / 127.5 - 1).float()
            x1 = (r / 127.5 - 1).float()
            out.append(self.model(x1, x0).reshape(-1).double())
        return torch.cat(out)

    def protocol(self) -> dict:
        return {"implementation": f"lpips package v0.1 linear heads, torchvision {self.net} backbone",
                "backbone_sha256": self.backbone_sha256, "input_range": "[-1, 1] (pixels / 127.5 - 1)",
                "reduction": "spatial mean per image"}  # fmt: skip
