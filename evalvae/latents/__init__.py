"""``evalvae latents``: what each VAE's latents look like, and the factors a diffusion model should use with them."""
