"""``evalvae ref``: the originals' feature statistics (rFID/KID references) precomputed into the cache."""
