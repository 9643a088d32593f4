"""The job layer: what every task (recon, t2i, bench, ref) shares.

Selecting VAEs, the output directory, loading with the precision policy, recording failures,
timing rows and the outcome; the latent cache, resume chunks and sharding across processes.
Tasks build on it; it builds only on the core and the domain packages (vae, data, metrics).
"""
