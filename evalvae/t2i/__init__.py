"""Text-to-image evaluation: one set of diffusion latents per (prompt, seed), decoded by every VAE."""
