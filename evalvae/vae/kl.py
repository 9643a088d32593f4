"""The AutoencoderKL family (SD 1.x/2.x, SDXL, SD3, FLUX VAEs) through diffusers."""

from __future__ import annotations

from evalvae.vae.diffusers import DiffusersFamily


class KLAdapter(DiffusersFamily):
    """A diffusers ``AutoencoderKL``; images in [-1, 1]; scaling and shift factors from its config.

    ``scaling_factor``/``shift_factor`` given in the spec override the model config's values.
    Memory modes are diffusers' own ``enable_tiling``/``enable_slicing`` (what pipelines use),
    with tiles of ``config.sample_size`` pixels by default.

    ``force_upcast`` is the model config's ``force_upcast`` where the config file sets it (the
    SDXL VAE: true; sdxl-vae-fp16-fix: false); a config that predates the key (SD 1.x/2.x VAEs)
    counts as false, as the SD 1.x pipelines never upcast. A spec's ``force_upcast`` overrides it.
    """

    cls = "AutoencoderKL"
    family = "autoencoder-kl"
