"""Deep Compression Autoencoders (DC-AE, MIT Han lab; SANA's VAE) through diffusers' ``AutoencoderDC``."""

from __future__ import annotations

from evalvae.vae.base import VAEAdapter
from evalvae.vae.diffusers import DiffusersFamily, strided_tiling


class DCAEAdapter(DiffusersFamily):
    """A diffusers ``AutoencoderDC``; images in [-1, 1]; deterministic latents; scaling factor from its config.

    The downsampling factor is the model's ``spatial_compression_ratio`` (32 for the f32 models),
    so images are centre-cropped to a multiple of it, as for every VAE. Memory modes are
    diffusers' own ``enable_tiling``/``enable_slicing``; tiles of ``tile_size`` pixels overlap by a
    quarter of a tile, rounded down to a multiple of the factor (at least one factor).
    """

    cls = "AutoencoderDC"
    family = "dc-ae"
    states_crop = True
    decode_seams = VAEAdapter.decode_seams  # the seam bands of tiles of tile_size overlapping by a quarter

    def _tiles_natively(self) -> bool:
        return True

    def _tile(self, tile_size: int) -> None:
        strided_tiling(self.module, tile_size, self.downsample)
