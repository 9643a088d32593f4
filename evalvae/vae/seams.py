"""Where tiled decoding blends neighbouring tiles (the seam band), and the error of a tiled output there.

The seam band of one axis is the union of the output intervals in which two neighbouring tiles
overlap, so both contribute through the blend; the band of an image is every row in a row
interval and every column in a column interval (full width and height). Outside it each output
pixel comes from one tile alone. Two geometries:

* evalvae's generic tiling (:func:`evalvae.vae.tiling.tiled_apply`, used by the tiny family):
  a latent axis of ``size`` is covered by tiles of ``tile`` latent pixels starting at
  :func:`~evalvae.vae.tiling.tile_starts` with stride ``tile - overlap`` (the last one moved back to
  end at ``size``); tiles ``a`` and ``b`` overlap on ``[b, a + tile)``, i.e. ``[b * f, (a + tile) * f)``
  output pixels for a decoder of factor ``f``. An axis no longer than one tile has no seam, and an
  input no larger than one tile on both axes is not tiled at all.
* diffusers' ``AutoencoderKL.tiled_decode``: tiles start every ``int(tile * (1 - 0.25))`` latent
  pixels, each output tile is cut to ``row_limit = tile_px - blend`` rows (``blend = int(tile_px *
  0.25)``), and tile ``k >= 1`` blends its first ``blend`` rows with tile ``k - 1``:
  ``[k * row_limit, k * row_limit + blend)``. Both axes are tiled once either exceeds one tile.
"""

from __future__ import annotations

import torch

from evalvae.vae.tiling import tile_starts

Intervals = list[tuple[int, int]]


def generic_seams(size: int, tile: int, overlap: int, scale: int) -> Intervals:
    """Output intervals of one axis where tiles of :func:`~evalvae.vae.tiling.tiled_apply` overlap.

    ``size``, ``tile`` and ``overlap`` are in input (latent) pixels, ``scale`` the output pixels per
    input pixel. Ignores whether the other axis is tiled (see :func:`generic_decode_seams`).
    """
    if size <= tile:
        return []
    starts = tile_starts(size, tile, tile - overlap)
    return [(b * scale, (a + tile) * scale) for a, b in zip(starts, starts[1:]) if a + tile > b]


def generic_decode_seams(h: int, w: int, tile: int, overlap: int, scale: int) -> tuple[Intervals, Intervals]:
    """Row and column seam intervals (output pixels) of a latent of ``h`` x ``w`` under the generic tiling."""
    if h <= tile and w <= tile:  # tiled_apply runs such an input whole
        return [], []
    return generic_seams(h, tile, overlap, scale), generic_seams(w, tile, overlap, scale)


def diffusers_kl_seams(size: int, tile_latent: int, tile_px: int, overlap_factor: float = 0.25) -> Intervals:
    """Output intervals of one axis that diffusers' ``AutoencoderKL.tiled_decode`` blends (``size`` in latent pixels)."""
    stride = int(tile_latent * (1 - overlap_factor))
    blend = int(tile_px * overlap_factor)
    row_limit = tile_px - blend
    out_size = size * (tile_px // tile_latent)
    bands = []
    for k in range(1, len(range(0, size, stride))):
        lo = k * row_limit
        if lo < out_size and blend > 0:
            bands.append((lo, min(lo + blend, out_size)))
    return bands


def band_mask(height: int, width: int, rows: Intervals, cols: Intervals) -> torch.Tensor:
    """``(height, width)`` bool: True on every row of ``rows`` and every column of ``cols``."""
    mask = torch.zeros(height, width, dtype=torch.bool)
    for lo, hi in rows:
        mask[max(lo, 0) : min(hi, height), :] = True
    for lo, hi in cols:
        mask[:, max(lo, 0) : min(hi, width)] = True
    return mask


def max_abs_split(diff: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    """Largest ``|diff|`` (N, C, H, W) on the band ``mask`` (H, W) and off it; NaN where a part is empty
    or ``diff`` is not finite there."""
    a = diff.abs().double()
    m = mask.to(a.device)

    def top(sel: torch.Tensor) -> float:
        if not bool(sel.any()):
            return float("nan")
        part = a[..., sel]
        return float(part.max()) if bool(torch.isfinite(part).all()) else float("nan")

    return top(m), top(~m)
