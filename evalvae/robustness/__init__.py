"""``evalvae robustness``: tiled decoding, reduced precision and resolution, each against the VAE's own fp32 output."""
