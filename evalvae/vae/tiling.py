"""Tiled inference for fully convolutional encoders and decoders: overlapping tiles, linear blending.

A large image (or latent) is cut into square tiles that overlap by ``overlap`` input pixels; each
tile goes through the network on its own, so activation memory is bounded by the tile size. In
each overlap, the outer quarter next to a tile's inner edge (where the zero padding at the tile
border reaches) gets weight 0, the middle half a linear crossfade, and the weights are normalised
by their sum. A network whose receptive field reaches no further than a quarter of the overlap
therefore gives exactly its untiled output; a wider one gives an approximation that improves
with the overlap. Networks with global operations (GroupNorm, attention, the pool branch of
TAEF2) see per-tile statistics instead, the approximation every tiled VAE makes.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import torch


def tile_starts(size: int, tile: int, stride: int) -> list[int]:
    """Offsets of tiles of length ``tile`` that cover ``[0, size)`` with step ``stride``.

    The last tile is moved back so that it ends at ``size``; a size within one tile gives ``[0]``.
    """
    if tile < 1 or stride < 1:
        raise ValueError(f"tile={tile} and stride={stride} must be positive")
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, stride))
    return starts + [size - tile]


def blend_weights(start: int, length: int, size: int, overlap: int) -> torch.Tensor:
    """1-D blending weights of a tile covering ``[start, start + length)`` of an axis of ``size``.

    On each inner edge (one that is not the axis's own start or end), the ``overlap // 4``
    positions nearest the edge get 0, the next ``overlap - 2 * (overlap // 4)`` rise linearly,
    and the rest get 1. Two neighbours overlapping by exactly ``overlap`` get weights that sum
    to 1 across their overlap; a larger overlap (the last tile of an axis) still has a positive
    sum everywhere.
    """
    i = torch.arange(length, dtype=torch.float64)
    margin = overlap // 4
    ramp = overlap - 2 * margin

    def rise(distance: torch.Tensor) -> torch.Tensor:
        return ((distance - margin + 1) / (ramp + 1)).clamp(0, 1)

    w = torch.ones(length, dtype=torch.float64)
    if overlap > 0 and start > 0:
        w = torch.minimum(w, rise(i))
    if overlap > 0 and start + length < size:
        w = torch.minimum(w, rise(length - 1 - i))
    return w


def _scaled(n: int, scale: Fraction, what: str) -> int:
    out = n * scale
    if out.denominator != 1:
        raise ValueError(f"{what}={n} times the network's scale {scale} is not a whole number of pixels")
    return int(out)


def tiled_apply(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, tile: int, overlap: int, scale
) -> torch.Tensor:
    """Apply ``fn`` to ``x`` (N, C, H, W) in overlapping tiles and blend the results.

    Args:
        fn: the network; maps (N, C, h, w) to (N, C', h * scale, w * scale).
        tile: tile side in input pixels; inputs no larger than one tile go through ``fn`` whole.
        overlap: overlap of neighbouring tiles in input pixels (``0 <= overlap < tile``).
        scale: output size over input size, e.g. ``Fraction(1, 8)`` for an encoder, 8 for a decoder.

    Accumulation is in float32 (float64 for float64 outputs); the result has the dtype of ``fn``'s output.
    """
    scale = Fraction(scale)
    h, w = x.shape[-2:]
    if h <= tile and w <= tile:
        return fn(x)
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap={overlap} must be in [0, tile={tile})")
    stride = tile - overlap
    rows, cols = tile_starts(h, tile, stride), tile_starts(w, tile, stride)
    for n, what in (
        (tile, "tile"),
        (stride, "tile - overlap"),
        (rows[-1], "height - tile"),
        (cols[-1], "width - tile"),
    ):
        _scaled(n, scale, what)
    out_overlap = _scaled(overlap, scale, "overlap")
    out_h, out_w = _scaled(h, scale, "height"), _scaled(w, scale, "width")

    acc = weight_sum = out_dtype = acc_dtype = None
    for top in rows:
        for left in cols:
            y = fn(x[..., top : top + tile, left : left + tile])
            oh, ow = y.shape[-2:]
            ot, ol = int(top * scale), int(left * scale)
            wy = blend_weights(ot, oh, out_h, out_overlap).to(y.device)
            wx = blend_weights(ol, ow, out_w, out_overlap).to(y.device)
            wt = wy[:, None] * wx[None, :]
            if acc is None:
                out_dtype = y.dtype
                acc_dtype = torch.promote_types(y.dtype, torch.float32)
                acc = torch.zeros(*y.shape[:2], out_h, out_w, device=y.device, dtype=acc_dtype)
                weight_sum = torch.zeros(out_h, out_w, device=y.device, dtype=acc_dtype)
            wt = wt.to(acc_dtype)
            acc[..., ot : ot + oh, ol : ol + ow] += y.to(acc_dtype) * wt
            weight_sum[ot : ot + oh, ol : ol + ow] += wt
            del y
    return (acc / weight_sum).to(out_dtype)
