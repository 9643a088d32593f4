"""The words evalvae's configs, results and domain share, spelt once and without importing torch.

The config schema (:mod:`evalvae.jobs.schema`) checks a command line against these choices before
anything heavy is imported, and the domain (devices, datasets, VAEs, bench, t2i, robustness) checks
its arguments against the same tuples. :class:`Region` is what a dataset knows of an image's regions
(:mod:`evalvae.data.textchart`) and what the region metrics score (:mod:`evalvae.metrics.regions`).
"""

from __future__ import annotations

from dataclasses import dataclass

# The files a dataset folder's images may be (any case); a VAE's folder of reconstructions too.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")

DTYPE_NAMES = ("fp32", "fp16", "bf16")  # dtype, vae.<name>.dtype, bench.dtypes (evalvae.device.DTYPES)
# precision: the VAEs' arithmetic in a run. fp32 is IEEE float32 (TF32 off, also for the convolutions that
# PyTorch runs in TF32 on CUDA by default); tf32 keeps fp32 weights and lets CUDA's tensor cores round the
# inputs of convolutions and matmuls to TF32; bf16 runs the VAEs in bfloat16 (dtype=bf16)
PRECISIONS = ("fp32", "tf32", "bf16")
PRECISION_DTYPE = {"fp32": "fp32", "tf32": "fp32", "bf16": "bf16"}  # what ${dtype} is under each
DEVICES = ("auto", "cpu", "cuda", "mps")  # device= (evalvae.device.resolve_device)
CROPS = ("center", "none")  # dataset.crop
SMALL = ("upscale", "skip")  # dataset.small
# plain: the whole batch at once; sliced: one image at a time; tiled: overlapping spatial tiles
MEMORY_MODES = ("plain", "tiled", "sliced")
T2I_LATENTS = ("run", "cache")  # t2i.latents
BENCH_OPS = ("encode", "decode", "roundtrip")  # bench.ops, in the order evalvae bench measures them
ISOLATION = ("auto", "process", "none")  # bench.isolate
ROBUSTNESS_CHECKS = ("tiled", "precision", "resolution")  # robustness.checks


@dataclass(frozen=True)
class Region:
    """One region of an image.

    Args:
        box: the four corners ``((x, y), ...)`` clockwise from the top left, in pixels of the
            evaluated image (a quadrilateral, as text detectors give them).
        size_px: what the region is binned by: a text line's height, a face's size.
        truth: the region's ground-truth string, where the dataset knows it.
    """

    box: tuple[tuple[float, float], ...]
    size_px: float
    truth: str | None = None

    @classmethod
    def rect(cls, x0: float, y0: float, x1: float, y1: float, size_px: float, truth: str | None = None) -> Region:
        """An axis-aligned region from its left, top, right and bottom edges."""
        return cls(((x0, y0), (x1, y0), (x1, y1), (x0, y1)), float(size_px), truth)

    def shifted(self, dx: float, dy: float) -> Region:
        return Region(tuple((x + dx, y + dy) for x, y in self.box), self.size_px, self.truth)

    def flat_box(self) -> list[float]:
        """``[x0, y0, x1, y1, x2, y2, x3, y3]``, as records store it."""
        return [float(v) for point in self.box for v in point]

    def to_dict(self) -> dict:
        return {"box": self.flat_box(), "size_px": self.size_px, "truth": self.truth}

    @classmethod
    def from_dict(cls, data: dict) -> Region:
        b = [float(v) for v in data["box"]]
        return cls(tuple(zip(b[0::2], b[1::2])), float(data["size_px"]), data.get("truth"))
