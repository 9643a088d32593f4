"""evalvae: trustworthy, fast evaluation of image autoencoders for latent diffusion."""

__version__ = "0.1.0"
