"""Feature extractors for the distribution metrics (rFID, KID), all taking 8-bit RGB images.

An extractor maps ``(N, 3, H, W)`` uint8 images to ``(N, D)`` features and describes itself
(:meth:`FeatureExtractor.identity`) so reference statistics are cached per extractor and weights.
"""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch

from evalvae.checkpoints import local_then_hub, state_dict_sha256
from evalvae.errors import EvalvaeError, check_choice
from evalvae.metrics.weights import MetricUnavailable, find_weights, load_network

log = logging.getLogger(__name__)

# The FID Inception weights (TF "2015-12-05" graph ported to PyTorch), as torch-fidelity and
# pytorch-fid download them; the file name carries the first 8 hex digits of its sha256.
INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
INCEPTION_FILES = ("weights-inception-2015-12-05-6726825d.pth", "pt_inception-2015-12-05-6726825d.pth")
# where $EVALVAE_WEIGHTS holds it: make-weights' classifier-free copy first, the upstream files also found
INCEPTION_IN_WEIGHTS_FOLDER = ("fid/pt_inception-2015-12-05_torch-fidelity.pth", *(f"fid/{n}" for n in INCEPTION_FILES))
# state_dict_sha256 of the tensors pool3 features use (all but the classifier ``fc.*`` and BatchNorm's
# ``num_batches_tracked``), computed on a copy of the same network in torch-fidelity's layout.
STANDARD_INCEPTION = "2880397385c127930be1f918f46a156bdc0843c2c6d32bf5f131cc254f21ff9a"
RESIZES = ("clean", "legacy")


@contextlib.contextmanager
def quiet_transformers():
    """No loading bars or load reports from transformers while a network is read (evalvae says what it loads;
    a full CLIP checkpoint read as a vision model leaves its text tower unread, which is no news)."""
    from transformers.utils import logging as tlog

    verbosity, bars = tlog.get_verbosity(), tlog.is_progress_bar_enabled()
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        tlog.set_verbosity(verbosity)
        if bars:
            tlog.enable_progress_bar()


class FeatureExtractor(ABC):
    """Images to features. ``module`` (the network, if any) follows :meth:`to`; inputs may be on any device."""

    name: str
    dim: int
    module: torch.nn.Module | None = None
    device = torch.device("cpu")
    note = ""  # a caveat that goes next to the metric's value, such as non-standard weights
    version: int = 1  # bump with any change that moves the features: stored ones are then recomputed
    libraries: tuple[str, ...] = ("torch",)  # the packages whose versions can move the features

    @abstractmethod
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        """``(N, 3, H, W)`` uint8 on any device -> ``(N, dim)`` float64 features."""

    @abstractmethod
    def identity(self) -> dict:
        """Everything that changes the features: name, weights hash, preprocessing."""

    def extract(self, images: torch.Tensor) -> torch.Tensor:
        """The features of :meth:`__call__` as a float64 tensor, left where they were computed: an extractor
        that runs on the device overrides it, so that a run brings them to the host without waiting for them."""
        return torch.from_numpy(self(images))

    def to(self, device: torch.device) -> FeatureExtractor:
        self.device = torch.device(device)
        if self.module is not None:
            self.module.to(self.device)
        return self


def bicubic_299(images: torch.Tensor) -> torch.Tensor:
    """clean-fid's resize of ``(N, 3, H, W)`` uint8 to float32 299x299 in [0, 255], on the images' device.

    clean-fid resizes each channel as a float32 PIL image, bicubic, and clips. torch's antialiased bicubic is
    PIL's resampling filter (Keys' a = -0.5, its support widened by the scale when shrinking); in float64 it
    gives PIL's values to 2.3e-5 on 0..255 (float32's rounding of PIL's output), so the images never leave
    the device between the VAE and the network (tests/metrics/test_frechet.py holds it against PIL).
    """
    x = torch.nn.functional.interpolate(images.double(), size=(299, 299), mode="bicubic", antialias=True)
    return x.clamp_(0, 255).float()


def _pool3_tensor(key: str) -> bool:
    return not key.startswith("fc.") and not key.endswith("num_batches_tracked")


def torch_fidelity_inception(state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """torch-fidelity's ``FeatureExtractorInceptionV3`` holding ``state`` (pool3 tensors; the classifier may be absent).

    torch-fidelity only builds this network by loading a state dict itself, from a URL or by
    unpickling a path with ``weights_only=False``; evalvae hands it the tensors it has already read
    safely instead, through the one function torch-fidelity fetches them with.
    """
    from unittest import mock

    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    full = dict(state)
    full.setdefault("fc.weight", torch.zeros(1008, 2048))  # logits are never used: pool3 precedes fc
    full.setdefault("fc.bias", torch.zeros(1008))
    for key in list(state):
        if key.endswith(".running_var"):
            full.setdefault(key[: -len("running_var")] + "num_batches_tracked", torch.tensor(0))
    with mock.patch.object(tfi, "load_state_dict_from_url", lambda *_, **__: full):
        net = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    return net.eval()


class InceptionV3(FeatureExtractor):
    """Inception-V3 pool3 (2048-d) features with the standard FID weights (torch-fidelity's network).

    ``resize=clean`` (default) follows clean-fid: the 8-bit image is resized to 299x299 with PIL's
    bicubic filter in float (:func:`bicubic_299`, on the device) and fed without re-quantization. ``resize=legacy`` is torch-fidelity's
    TF1-compatible bilinear resize of the uint8 image (what torch-fidelity and older torchmetrics
    report). Weights come from ``weights``, else ``$EVALVAE_WEIGHTS/fid/`` when that is set, else
    torch's hub cache; missing weights make the metric unavailable.
    """

    libraries = ("torch", "torch-fidelity")  # the network and the resize; torch-fidelity's network code
    version = 2  # 2: clean-fid's resize by torch on the device, not by PIL on the host
    dim = 2048
    # torch-fidelity's block order up to pool3.
    BLOCKS = (
        "Conv2d_1a_3x3",
        "Conv2d_2a_3x3",
        "Conv2d_2b_3x3",
        "MaxPool_1",
        "Conv2d_3b_1x1",
        "Conv2d_4a_3x3",
        "MaxPool_2",
        "Mixed_5b",
        "Mixed_5c",
        "Mixed_5d",
        "Mixed_6a",
        "Mixed_6b",
        "Mixed_6c",
        "Mixed_6d",
        "Mixed_6e",
        "Mixed_7a",
        "Mixed_7b",
        "Mixed_7c",
        "AvgPool",
    )

    def __init__(self, weights: str | None = None, resize: str = "clean", batch_size: int = 32):
        self.resize = check_choice("metrics.fid.resize", resize, RESIZES)
        self.batch_size = batch_size
        argument = "metrics.fid.weights"
        path = find_weights(
            weights, INCEPTION_FILES, argument, "FID Inception weights", INCEPTION_URL, INCEPTION_IN_WEIGHTS_FOLDER
        )
        state, self.weights = load_network(path, argument, "FID Inception", _pool3_tensor, STANDARD_INCEPTION)
        self.weights_sha256 = self.weights.tensors_sha256
        self.net = self.module = torch_fidelity_inception(state)
        self.name = f"inception-v3-fid-{self.resize}"

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        return self.extract(images).cpu().numpy()

    @torch.inference_mode()
    def extract(self, images: torch.Tensor) -> torch.Tensor:
        out = []
        for chunk in images.split(self.batch_size):
            if self.resize == "legacy":
                (f,) = self.net(chunk.to(self.device))
            else:
                x = (bicubic_299(chunk.to(self.device)) - 128) / 128
                for block in self.BLOCKS:
                    x = getattr(self.net, block)(x)
                f = torch.flatten(x, 1)
            out.append(f.double())
        return torch.cat(out)

    @property
    def note(self) -> str:
        return self.weights.note

    def identity(self) -> dict:
        resize = (
            "PIL bicubic to 299x299 in float, no re-quantization (clean-fid)"  # since version 2 by torch, to 2.3e-5
            if self.resize == "clean"
            else "TF1-compatible bilinear of uint8 to 299x299 (torch-fidelity legacy)"
        )
        return {
            "name": self.name,
            "weights_sha256": self.weights_sha256,
            "weights_standard": self.weights.standard,
            "resize": resize,
            "input": "8-bit RGB, (x - 128) / 128",
            "implementation": "torch-fidelity FeatureExtractorInceptionV3, pool3 2048-d",
        }


class HFVision(FeatureExtractor):
    """Pooled image embeddings of a transformers vision model (DINOv2, CLIP), from the hub or a folder.

    Uses the model's own image processor (resize, crop, normalisation). Features: DINOv2's
    ``pooler_output`` (CLS token after layer norm); CLIP's projected image embedding.
    """

    libraries = ("torch", "transformers", "Pillow")

    def __init__(self, model: str, batch_size: int = 32):
        try:
            from transformers import AutoImageProcessor, AutoModel, CLIPModel
        except ImportError as e:
            raise MetricUnavailable(f"transformers is needed for extractor {model!r} ({e})") from None
        self.kind = "clip" if "clip" in model.lower() else "pooler"

        def load(local_files_only: bool):
            net = CLIPModel if self.kind == "clip" else AutoModel
            return (
                AutoImageProcessor.from_pretrained(model, local_files_only=local_files_only),
                net.from_pretrained(model, local_files_only=local_files_only).eval(),
            )

        try:
            self.processor, self.model = local_then_hub(load, may_download=not Path(model).expanduser().is_dir())
        except Exception as e:  # offline, missing or gated: unavailable, with the reason
            raise MetricUnavailable(
                f"feature extractor {model!r} could not be loaded ({type(e).__name__}); "
                "download it where the hub is reachable or give a local folder"
            ) from None
        self.model_id, self.batch_size, self.module = model, batch_size, self.model
        self.name = model.rstrip("/").split("/")[-1]
        with torch.inference_mode():
            self.dim = self(torch.zeros(1, 3, 64, 64, dtype=torch.uint8)).shape[1]
        self.weights_sha256 = state_dict_sha256(self.model.state_dict())

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        out = []
        for chunk in images.split(self.batch_size):
            inputs = self.processor(images=list(chunk.cpu().permute(0, 2, 3, 1).numpy()), return_tensors="pt").to(
                self.device
            )
            if self.kind == "clip":
                f = self.model.get_image_features(**inputs)
                f = getattr(f, "pooler_output", f)  # transformers 5 returns an output object
            else:
                f = self.model(**inputs).pooler_output
            out.append(f.double().cpu().numpy())
        return np.concatenate(out)

    def identity(self) -> dict:
        return {
            "name": self.name,
            "model": self.model_id,
            "weights_sha256": self.weights_sha256,
            "resize": "the model's own image processor",
            "implementation": f"transformers {type(self.model).__name__}",
        }


def build_extractor(spec, weights: str | None = None, resize: str = "clean") -> FeatureExtractor:
    """The feature extractor named by ``metrics.fid.extractor``.

    ``inception`` (the standard FID network; ``weights``/``resize`` apply to it), a transformers
    hub id or local folder of a vision model (DINOv2, CLIP), a dotted class path, or a mapping
    with ``_target_``.
    """
    from omegaconf import DictConfig

    from evalvae.config import instantiate

    if isinstance(spec, (dict, DictConfig)):
        return instantiate(spec)
    if spec == "inception":
        return InceptionV3(weights=weights, resize=resize)
    if isinstance(spec, str) and ("/" in spec or Path(spec).expanduser().is_dir()):
        return HFVision(weights or spec)
    if isinstance(spec, str) and "." in spec:
        return instantiate({"_target_": spec})
    raise EvalvaeError(
        f"invalid metrics.fid.extractor={spec!r}; choose inception, a hub id or folder such as "
        "facebook/dinov2-base, a dotted class path, or a mapping with _target_"
    )
