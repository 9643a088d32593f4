"""The reconstruction task: encode and decode every image of a dataset with each VAE, and score it."""

from evalvae.jobs.runtime import StageTimes
from evalvae.recon.loop import BatchResult, finite_images, reconstruct, score

__all__ = ["BatchResult", "StageTimes", "finite_images", "reconstruct", "score"]
