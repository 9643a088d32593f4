"""Write a randomly initialised AutoencoderKL with the SD 1.x VAE's architecture to a diffusers folder.

Its compute and memory equal those of the real SD 1.x VAE (stabilityai/sd-vae-ft-mse and kin),
so it stands in for them in time and memory benchmarks where the real weights cannot be
downloaded. Its outputs mean nothing: never use it for quality numbers.

    python benchmarks/sd_vae_random.py OUT_DIR [--tiny]

``--tiny`` writes a 2-block, 8-channel model of the same family instead (for checking scripts).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

# diffusers' AutoencoderKL config of the SD 1.x VAE (vae/config.json of the SD 1.x repositories)
SD1_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}
TINY_CONFIG = {
    **SD1_CONFIG,
    "down_block_types": ["DownEncoderBlock2D"] * 2,
    "up_block_types": ["UpDecoderBlock2D"] * 2,
    "block_out_channels": [8, 8],
    "layers_per_block": 1,
    "norm_num_groups": 4,
    "sample_size": 32,
}


def write(path: str | Path, tiny: bool = False, seed: int = 0) -> Path:
    """Save the random model to ``path``; return ``path``."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    model = AutoencoderKL(**(TINY_CONFIG if tiny else SD1_CONFIG))
    model.save_pretrained(path)
    return Path(path)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    print(write(args.out, tiny=args.tiny))
