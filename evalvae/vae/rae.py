"""Representation autoencoders (RAE, Zheng et al. 2025) through diffusers' ``AutoencoderRAE``: a frozen
representation encoder (DINOv2, SigLIP2 or MAE) and a ViT decoder trained to invert it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from evalvae.vae.diffusers import DiffusersFamily

STATISTICS = ("encoder_mean", "encoder_std", "_latents_mean", "_latents_std")  # buffers that shape the latents


class RAEAdapter(DiffusersFamily):
    """A diffusers ``AutoencoderRAE``; images in [-1, 1] (the model reads and writes [0, 1]).

    **Geometry.** The encoder resizes every image (bicubic) to its ``encoder_input_size`` (224 px for the
    released models) and returns a grid of patch tokens, ``encoder_hidden_size`` channels each (768 for
    DINOv2-B); the decoder always outputs ``decoder_image_size`` pixels square (256), one ``patch_size`` (16) patch
    per token. So the downsampling factor is ``patch_size``, and only images of exactly the decoder's size are
    reconstructed: the others are left out with a reason (``dataset.resolution=256`` scores every image).

    **Latents.** The class's own ``encode``, which is the diffusion space: its tokens normalized by the
    checkpoint's ``latents_mean``/``latents_std`` (``(z - mean) / (std + 1e-5)``) and times ``scaling_factor``;
    ``decode`` inverts both. diffusers 0.42 has no RAE pipeline. The statistics and the encoder's input
    normalization join the encoder's weights in :meth:`encoder_state_dict`. Latents are deterministic.

    **Memory modes.** ``plain`` and ``sliced`` (diffusers' own); a ViT has no tiled mode.
    """

    cls = "AutoencoderRAE"
    family = "rae"
    memory_modes = ("plain", "sliced")
    states_crop = True

    def _model_facts(self, name, model):
        cfg = model.config
        return int(cfg.encoder_hidden_size), int(model.decoder_patch_size), 1.0, 0.0, False

    @property
    def image_size(self) -> int:
        """The side of every image the decoder outputs, in pixels."""
        return int(self.module.decoder_image_size)

    def _moments(self, images: torch.Tensor):
        return self.module.encode((images + 1) / 2).latent, None

    def _decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        return self.module.decode(z).sample * 2 - 1

    def prepare_group(self, ids: Sequence[str], images: torch.Tensor) -> dict[str, str]:
        f, s = self.downsample, self.image_size
        h, w = images.shape[-2] // f * f, images.shape[-1] // f * f  # after the crop to the factor
        if (h, w) == (s, s):
            return {}
        why = f"an RAE decodes {s}x{s} px images only, not {w}x{h} (set dataset.resolution={s})"
        return dict.fromkeys(ids, why)

    def encoder_state_dict(self) -> Mapping[str, torch.Tensor]:
        state = self.module.state_dict()
        return {k: v for k, v in state.items() if k.startswith("encoder.") or k in STATISTICS}

    def describe(self) -> dict:
        cfg, info = self.module.config, super().describe()
        s = self.image_size
        return {
            **info,
            "crop": f"{info['crop']}; only {s}x{s} images are reconstructed, each resized (bicubic) to the "
            f"encoder's {cfg.encoder_input_size} px input",
            "encoder": f"{cfg.encoder_type}, {cfg.encoder_hidden_size} channels, patch {cfg.encoder_patch_size}",
            "latent_normalization": "AutoencoderRAE.encode's own: (tokens - latents_mean) / (latents_std + 1e-5) "
            "* scaling_factor",
        }
