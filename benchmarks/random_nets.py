"""Randomly initialised stand-ins for every network of a reconstruction job, and their FLOPs per image.

Three AutoencoderKLs with the SD 1.x VAE's architecture that share one encoder (as kl-f8, ft-ema and
ft-mse do: the fine-tunes changed only the decoder), the LPIPS AlexNet backbone and the FID
Inception, each written in the format evalvae reads (``vae.<name>.source``,
``metrics.lpips.backbone_weights``, ``metrics.fid.weights``). They have the real networks' compute
and memory, not their outputs: benchmarks only, never quality numbers.

Convolutions get He-normal weights (fan in, ReLU gain) so that activations keep their scale through
the ~50 layers of the Inception; PyTorch's default initialisation shrinks them towards zero, which
would make every rFID ~1e-12.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import torch
from sd_vae_random import SD1_CONFIG
from torch.utils.flop_counter import FlopCounterMode

# A 3-block (4x down), 8- to 16-channel model of the same family: checks scripts in seconds on a CPU.
TINY_CONFIG = {
    **SD1_CONFIG,
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "block_out_channels": [8, 16, 16],
    "layers_per_block": 1,
    "norm_num_groups": 4,
    "sample_size": 64,
}
VAE_NAMES = ("kl-f8", "ft-ema", "ft-mse")
# FLOPs per 256x256 image of the SD 1.x VAE (multiply-adds counted as 2), as the performance issue states them
SD_VAE_256_GFLOP = {"encode": 273.0, "decode": 622.0}


def he_init(module: torch.nn.Module) -> torch.nn.Module:
    for m in module.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                torch.nn.init.zeros_(m.bias)
    return module


def write_vaes(root: Path, tiny: bool = False, seed: int = 0) -> dict[str, Path]:
    """One diffusers folder per name of :data:`VAE_NAMES` under ``root``: the same encoder (and quant
    conv) in each, a different random decoder (and post-quant conv) in each."""
    from diffusers import AutoencoderKL

    config = TINY_CONFIG if tiny else SD1_CONFIG
    folders, first = {}, None
    for k, name in enumerate(VAE_NAMES):
        torch.manual_seed(seed + k)
        model = AutoencoderKL(**config)
        if first is None:
            first = model
        else:
            model.encoder.load_state_dict(first.encoder.state_dict())
            model.quant_conv.load_state_dict(first.quant_conv.state_dict())
        folders[name] = root / name
        model.save_pretrained(folders[name])
    return folders


def write_lpips_backbone(path: Path, seed: int = 0) -> Path:
    """torchvision's AlexNet ``features.*`` tensors, random: what ``metrics.lpips.backbone_weights`` takes."""
    import torchvision

    torch.manual_seed(seed)
    net = he_init(torchvision.models.alexnet(weights=None))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v for k, v in net.state_dict().items() if k.startswith("features.")}, path)
    return path


def random_inception() -> torch.nn.Module:
    """torch-fidelity's ``FeatureExtractorInceptionV3`` with random weights (it only builds by loading a
    state dict, from its URL or a path: both are stubbed out here)."""
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    cls = tfi.FeatureExtractorInceptionV3
    with (
        mock.patch.object(tfi, "load_state_dict_from_url", lambda *_, **__: None),
        mock.patch.object(cls, "load_state_dict", lambda self, state: None),
    ):
        net = cls("inception-v3-compat", ["2048"])
    return he_init(net).eval()


def pool3_blocks(net: torch.nn.Module) -> list[torch.nn.Module]:
    """The Inception's blocks from its input to the 2048-d pool3 features, in order (all but the classifier)."""
    return [m for name, m in net.named_children() if name != "fc"]


def write_inception(path: Path, seed: int = 0) -> Path:
    """The random Inception's full state dict in torch-fidelity's layout: what ``metrics.fid.weights`` takes."""
    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(random_inception().state_dict(), path)
    return path


def count_flops(fn) -> int:
    """FLOPs of ``fn()`` as :class:`torch.utils.flop_counter.FlopCounterMode` counts them (a multiply-add is 2)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def vae_flops(folder: Path, resolution: int) -> dict[str, int]:
    """FLOPs of encoding (posterior mode) and decoding one ``resolution``-px image with the model in ``folder``,
    counted on the meta device (no memory, no compute)."""
    from diffusers import AutoencoderKL

    config = AutoencoderKL.load_config(folder)
    with torch.device("meta"):
        model = AutoencoderKL.from_config(config).eval()
    x = torch.empty(1, 3, resolution, resolution, device="meta")
    with torch.no_grad():
        z = model.encode(x).latent_dist.mode()
        return {
            "encode": count_flops(lambda: model.encode(x).latent_dist.mode()),
            "decode": count_flops(lambda: model.decode(z).sample),
        }


def feature_flops(resolution: int) -> dict[str, int]:
    """FLOPs per image of the feature networks: the Inception on its 299x299 input, and LPIPS-alex on a
    ``resolution``-px image (half of one pair's forward pass: its two trunk passes and their heads)."""
    import warnings

    import lpips

    net = random_inception()
    x = torch.zeros(1, 3, 299, 299)

    def inception():
        y = x
        for block in pool3_blocks(net):
            y = block(y)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(pretrained|weight enum).*")
        model = lpips.LPIPS(pretrained=False, net="alex", pnet_rand=True, verbose=False).eval()
    pair = torch.zeros(1, 3, resolution, resolution)
    with torch.no_grad():
        return {"inception": count_flops(inception), "lpips": count_flops(lambda: model(pair, pair)) // 2}
