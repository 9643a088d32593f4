"""The three robustness checks of one VAE, each against its own plain fp32 output, as tidy rows.

A row is ``{vae, check, setting, metric, value, n, note}``; a check that cannot run gives its
metrics with ``value`` NaN and the reason in ``note``. Pixel differences are measured on [0, 255]
pixels clamped but not rounded (as the bench's fidelity rows), so differences below one grey level
count; PSNR is the mean over images of the per-image PSNR (identical outputs give inf).

* ``tiled``: the same latents decoded in ``tiled`` mode and plainly. Besides the PSNR between the two,
  the largest |difference| on the seam band (the pixels where neighbouring tiles are blended,
  :mod:`evalvae.vae.seams`) and off it, and the band's share of the pixels.
* ``precision``: the VAE loaded again in fp16 / bf16 (exactly as asked, no upcasting) and run end
  to end on the same images; PSNR and max |difference| against the fp32 output over the images
  whose output is finite, and how many images and values were not.
* ``resolution``: the dataset at each resolution, scored against the originals by the run's
  per-image metrics (8-bit, as ``evalvae run``), and the encode + decode seconds per image.

An image with a side below the VAE's downsampling factor (``dataset.crop=none``, or a resolution below
it) has no crop to a multiple of it: every check skips it for that VAE, as ``evalvae run`` does
(:func:`~evalvae.data.transforms.below_factor`). The files a check skipped come back with their reason
(``(file, reason)``, the task writes them to ``skipped.csv``) and the check's rows say how many.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from evalvae.bench.fidelity import image_psnr
from evalvae.data.transforms import crop_to_multiple
from evalvae.errors import ConfigError, error_reason
from evalvae.jobs.runtime import StageTimes
from evalvae.metrics import from_uint8, result_columns, to_pixels
from evalvae.recon.loop import reconstruct
from evalvae.vae import VAEAdapter
from evalvae.vae.base import UnsupportedMemoryMode
from evalvae.vae.seams import band_mask, max_abs_split

TILED_METRICS = ("psnr", "max_abs", "seam_max_abs", "off_seam_max_abs", "seam_fraction")
PRECISION_METRICS = ("psnr", "max_abs", "nonfinite_images", "nonfinite_values")
TIME = "s_per_image"


def row(vae: str, check: str, setting, metric: str, value, n: int, note: str = "") -> dict:
    return dict(vae=vae, check=check, setting=str(setting), metric=metric, value=float(value), n=n, note=note)


def unavailable(vae: str, check: str, setting, metrics, reason: str) -> list[dict]:
    return [row(vae, check, setting, m, math.nan, 0, reason) for m in metrics]


def _pixels(y: torch.Tensor) -> torch.Tensor:
    return to_pixels(y, quantize=False)


def skipped_note(vae: VAEAdapter, skipped: list[tuple[str, str]]) -> str:
    """The rows' note on the images skipped for ``vae`` (``(file, reason)``, reasons ``"vae '<name>': ..."``), or ``""``."""
    prefix = f"vae '{vae.name}': "
    mine = [why.removeprefix(prefix) for _, why in skipped if why.startswith(prefix)]
    if not mine:
        return ""
    more = f" and {len(set(mine)) - 1} other reason(s)" if len(set(mine)) > 1 else ""
    return f"{len(mine)} image(s) skipped for this VAE: {mine[0]}{more} (skipped.csv)"


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


@dataclass
class Reference:
    """The fp32 plain pass at the base resolution: per group, the model inputs and the float outputs (CPU)."""

    inputs: list[torch.Tensor] = field(default_factory=list)  # uint8 (N, 3, H, W), cropped to the factor
    seeds: list[list[int]] = field(default_factory=list)  # posterior=sample: image i's seed is vae.seed + i
    outputs: list[torch.Tensor] = field(default_factory=list)  # float32 (N, 3, H, W), nominally [-1, 1]
    tiled: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in TILED_METRICS})
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason): unreadable, too small, ...
    note: str = ""  # on the images skipped for the VAE (:func:`skipped_note`)

    @property
    def n(self) -> int:
        return sum(len(x) for x in self.inputs)


def reference_pass(vae: VAEAdapter, loader, *, tile_size: int | None, times: StageTimes) -> tuple[Reference, str]:
    """Encode and decode every image plainly in fp32; with ``tile_size``, decode the same latents tiled too.

    Returns the reference and, if tiling could not run, why (else ``""``).
    """
    ref, tiled_error = Reference(), "" if tile_size is not None else "not asked"
    for batch in loader:
        ref.skipped += batch.skipped
        for group in batch.groups_for(vae.downsample, f"vae '{vae.name}'", ref.skipped):
            images = crop_to_multiple(group.images.to(vae.device), vae.downsample)
            seeds = [vae.seed + i for i in group.indices]
            with times.stage("encode"):
                z = vae.encode(from_uint8(images), seeds=seeds)
            with times.stage("decode"):
                y = vae.decode(z)
            ref.inputs.append(images.cpu())
            ref.seeds.append(seeds)
            ref.outputs.append(y.cpu())
            if tiled_error:
                continue
            try:
                vae.set_memory_mode("tiled", tile_size)
                with times.stage("tiled_decode"):
                    yt = vae.decode(z)
                seams = vae.decode_seams(*z.shape[-2:])  # in tiled mode: its tile size
            except (UnsupportedMemoryMode, ConfigError) as e:
                tiled_error = str(e)
                continue
            finally:
                vae.set_memory_mode("plain")
            _tiled_stats(y, yt, seams, ref.tiled)
    ref.note = skipped_note(vae, ref.skipped)
    return ref, tiled_error


def _tiled_stats(y: torch.Tensor, yt: torch.Tensor, seams, out: dict) -> None:
    h, w = y.shape[-2:]
    mask = band_mask(h, w, *seams)
    diff = _pixels(yt) - _pixels(y)
    for j in range(len(y)):
        seam, off = max_abs_split(diff[j : j + 1], mask)
        out["psnr"].append(image_psnr(y[j : j + 1], yt[j : j + 1]))
        d = diff[j].abs().double()
        out["max_abs"].append(float(d.max()) if bool(torch.isfinite(d).all()) else math.nan)
        out["seam_max_abs"].append(seam)
        out["off_seam_max_abs"].append(off)
        out["seam_fraction"].append(float(mask.double().mean()))


def tiled_rows(vae: str, tile_size: int, overlap_px: int, ref: Reference, error: str) -> list[dict]:
    setting = f"tile={tile_size}"
    if error:
        return unavailable(vae, "tiled", setting, TILED_METRICS, error)
    stats, n = ref.tiled, len(ref.tiled["psnr"])
    note = f"{tile_size} px tiles overlapping by {overlap_px} px; |difference| in 8-bit levels, unrounded"
    note = "; ".join(filter(None, [note, ref.note]))
    out = [row(vae, "tiled", setting, "psnr", _mean(stats["psnr"]), n, note)]
    for m in ("max_abs", "seam_max_abs", "off_seam_max_abs"):
        values = stats[m]  # NaN: a non-finite tiled output, or (seam, off-seam) an empty part of the image
        value = math.nan if any(math.isnan(v) for v in values) else max(values, default=math.nan)
        out.append(row(vae, "tiled", setting, m, value, n, note))
    out.append(row(vae, "tiled", setting, "seam_fraction", _mean(stats["seam_fraction"]), n, note))
    return out


def precision_rows(vae: str, dtype: str, low: VAEAdapter, ref: Reference, times: StageTimes) -> list[dict]:
    """``low`` (the VAE loaded in ``dtype``) end to end on the reference's inputs, against its outputs."""
    psnrs, max_abs, bad_images, bad_values = [], 0.0, 0, 0
    for x, y, seeds in zip(ref.inputs, ref.outputs, ref.seeds):
        with times.stage(dtype):
            yd = low.decode(low.encode(from_uint8(x.to(low.device)), seeds=seeds)).cpu()
        finite = torch.isfinite(yd).flatten(1).all(1)
        bad_images += int((~finite).sum())
        bad_values += int((~torch.isfinite(yd)).sum())
        for j in finite.nonzero().flatten().tolist():
            psnrs.append(image_psnr(y[j : j + 1], yd[j : j + 1]))
            max_abs = max(max_abs, float((_pixels(yd[j]) - _pixels(y[j])).abs().max()))
    n = ref.n
    note = f"{bad_images} of {n} output(s) not finite; PSNR and max_abs over the others" if bad_images else ""
    note = "; ".join(filter(None, [note, ref.note]))
    ok = n - bad_images
    values = (_mean(psnrs) if ok else math.nan, ok), (max_abs if ok else math.nan, ok), (bad_images, n), (bad_values, n)
    return [row(vae, "precision", dtype, m, v, count, note) for m, (v, count) in zip(PRECISION_METRICS, values)]


def precision_unavailable(vae: str, dtype: str, device, e: BaseException) -> list[dict]:
    reason = f"{dtype} cannot run on {device}: {type(e).__name__}: {error_reason(e, limit=300)}"
    return unavailable(vae, "precision", dtype, PRECISION_METRICS, reason)


def resolution_rows(
    vae: VAEAdapter, name: str, resolution: int, loader, metrics: list, *, quantize: bool
) -> tuple[list, list]:
    """The VAE over ``loader`` (the dataset at ``resolution``), scored by ``metrics`` against the originals;
    and the files skipped, with their reason."""
    times = StageTimes(vae.device)
    rows, skipped = [], []
    for result in reconstruct(vae, loader, metrics, quantize=quantize, times=times):
        rows += result.rows
        skipped += result.skipped
    finite = [r for r in rows if not r["nonfinite"]]
    n_bad, n_up = len(rows) - len(finite), sum(bool(r["upscaled"]) for r in rows)
    facts = []
    if n_up:  # an upscaled original is smoother than a native one, so it is easier to reconstruct
        facts.append(f"{n_up} of {len(rows)} image(s) upscaled to {resolution} px (shorter side below it)")
    if n_bad:
        facts.append(f"{n_bad} of {len(rows)} output(s) not finite, left out")
    facts.append(skipped_note(vae, skipped))
    out = []
    for m in metrics:
        note = "; ".join(filter(None, [m.note, *facts]))
        for column in result_columns(m):
            values = [float(r[column]) for r in finite if not math.isnan(float(r.get(column, math.nan)))]
            value = _mean(values) if values else math.nan
            out.append(row(name, "resolution", resolution, column, value, len(values), note))
    seconds = times.seconds.get("encode", 0.0) + times.seconds.get("decode", 0.0)
    per_image = seconds / len(rows) if rows else math.nan
    out.append(row(name, "resolution", resolution, TIME, per_image, len(rows), "; ".join(filter(None, facts))))
    return out, skipped
