"""HunyuanImage 2.1's autoencoder (diffusers' ``AutoencoderKLHunyuanImage``: 64 channels, f32)."""

from __future__ import annotations

from evalvae.vae.diffusers import DiffusersFamily


class HunyuanImageAdapter(DiffusersFamily):
    """A diffusers ``AutoencoderKLHunyuanImage``; images in [-1, 1]; the posterior's mode times the config's
    ``scaling_factor``, the inverse of what ``HunyuanImagePipeline.__call__`` decodes::

        latents = latents.to(self.vae.dtype) / self.vae.config.scaling_factor
        image = self.vae.decode(latents, return_dict=False)[0]

    Images are centre-cropped to a multiple of the factor (``spatial_compression_ratio``, 32). No ``tiled`` mode:
    diffusers 0.42's ``tiled_encode`` of this class unpacks a 5-D shape from the 4-D images it is given and fails
    whenever an image is larger than one tile. ``sliced`` is diffusers' own.
    """

    cls = "AutoencoderKLHunyuanImage"
    family = "hunyuanimage"
    memory_modes = ("plain", "sliced")
    states_crop = True
