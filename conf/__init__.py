# Makes conf/ importable as evalvae.conf so Hydra finds it from any directory (see pyproject.toml).
