"""Tiled inference and the adapters' memory modes (plain, tiled, sliced)."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from evalvae.errors import ConfigError
from evalvae.vae import load_vae
from evalvae.vae.base import UnsupportedMemoryMode
from evalvae.vae.tiling import blend_weights, tile_starts, tiled_apply
from tests.helpers import photo

pytestmark = pytest.mark.usefixtures("one_thread")


def photos(n: int, size: int) -> torch.Tensor:
    """(n, 3, size, size) float32 in [-1, 1] from the smooth test photos."""
    return (
        torch.stack([torch.from_numpy(photo(size, size, seed=i)).permute(2, 0, 1) for i in range(n)]).float() / 127.5
        - 1
    )


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = ((a.double().clamp(-1, 1) + 1) * 127.5), ((b.double().clamp(-1, 1) + 1) * 127.5)
    return float(10 * torch.log10(255**2 / ((a - b) ** 2).mean()))


# -- the tiling arithmetic -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("size", "tile", "stride", "expected"),
    [
        (64, 64, 48, [0]),
        (40, 64, 48, [0]),
        (80, 32, 24, [0, 24, 48]),
        (64, 32, 24, [0, 24, 32]),
        (65, 32, 32, [0, 32, 33]),
    ],
)
def test_tile_starts_cover_the_axis_and_end_at_its_end(size, tile, stride, expected):
    starts = tile_starts(size, tile, stride)
    assert starts == expected
    covered = set().union(*(range(s, min(s + tile, size)) for s in starts))
    assert covered == set(range(size))


def test_blend_weights_skip_the_tile_border_and_crossfade_only_on_inner_edges():
    w = blend_weights(start=8, length=24, size=40, overlap=8)
    ramp = torch.tensor([0, 0, 0.2, 0.4, 0.6, 0.8], dtype=torch.float64)
    torch.testing.assert_close(w[:6], ramp)
    torch.testing.assert_close(w[-6:], ramp.flip(0))
    assert torch.all(w[6:-6] == 1)
    assert torch.all(blend_weights(start=0, length=16, size=16, overlap=8) == 1)  # no neighbour, no ramp
    # two neighbours overlapping by exactly `overlap` sum to one across the overlap
    left, right = blend_weights(0, 24, 40, 8), blend_weights(16, 24, 40, 8)
    torch.testing.assert_close(left[16:] + right[:8], torch.ones(8, dtype=torch.float64))


@pytest.mark.parametrize(
    ("scale", "fn"),
    [
        (1, lambda t: 2 * t + 1),
        (Fraction(1, 8), lambda t: F.avg_pool2d(t, 8)),
        (8, lambda t: F.interpolate(t, scale_factor=8, mode="nearest")),
    ],
)
def test_tiled_apply_equals_the_whole_for_local_maps(scale, fn):
    """Maps with no spatial context give exactly their untiled output, whatever the tiling."""
    torch.manual_seed(0)
    size = (80, 112) if scale != 8 else (10, 14)
    tile, overlap = (32, 8) if scale != 8 else (4, 1)
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    whole, tiled = fn(x), tiled_apply(fn, x, tile=tile, overlap=overlap, scale=scale)
    assert tiled.shape == whole.shape and tiled.dtype == whole.dtype
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-6)


def test_tiled_apply_equals_the_whole_when_the_overlap_exceeds_the_receptive_field():
    """Three 3x3 convolutions see 3 px each way: a quarter of a 12 px overlap."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 3, 3, padding=1),
    ).double()
    x = torch.randn(1, 3, 70, 90, dtype=torch.float64)
    with torch.no_grad():
        whole, tiled = net(x), tiled_apply(net, x, tile=32, overlap=12, scale=1)
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-10)
    with torch.no_grad():  # with too little overlap the zero padding at tile borders shows
        assert (tiled_apply(net, x, tile=32, overlap=2, scale=1) - whole).abs().max() > 1e-3


def test_tiled_apply_rejects_tiles_off_the_output_grid():
    x = torch.zeros(1, 3, 64, 64)
    with pytest.raises(ValueError, match="overlap"):
        tiled_apply(lambda t: t, x, tile=32, overlap=32, scale=1)
    with pytest.raises(ValueError, match="whole number"):
        tiled_apply(lambda t: F.avg_pool2d(t, 8), x, tile=36, overlap=8, scale=Fraction(1, 8))


# -- the adapters ----------------------------------------------------------------------------
def _vae(adapter: str, source, latent_space: str = "sd", **fields):
    """``evalvae.vae.<adapter>`` (``tiny.TinyAdapter``, ``kl.KLAdapter``) loaded from ``source`` on the CPU."""
    spec = {"_target_": f"evalvae.vae.{adapter}", "source": str(source), "latent_space": latent_space, **fields}
    return load_vae(adapter.rpartition(".")[0], spec, device="cpu")


def _pth_vae(pth_dir):
    return _vae("tiny.TinyAdapter", pth_dir, "flux2", weights_prefix="tiny", sha256=None)


def test_sliced_mode_equals_plain_for_each_family(tiny_pth_dir, tiny_kl_dir, tiny_ae_dir):
    x = photos(3, 32)
    for vae in [_pth_vae(tiny_pth_dir), _vae("kl.KLAdapter", tiny_kl_dir), _vae("tiny.TinyAdapter", tiny_ae_dir)]:
        z, y = vae.encode(x), vae.decode(vae.encode(x))
        vae.set_memory_mode("sliced")
        torch.testing.assert_close(vae.encode(x), z, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(vae.decode(z), y, rtol=1e-5, atol=1e-5)


def test_kl_tiling_is_diffusers_own(tiny_kl_dir):
    vae = _vae("kl.KLAdapter", tiny_kl_dir)
    assert vae.default_tile_size == 32  # the model's sample_size
    x = photos(1, 64)
    z, y = vae.encode(x), vae.decode(vae.encode(x))
    vae.set_memory_mode("tiled", tile_size=16)
    assert vae.module.use_tiling and not vae.module.use_slicing
    assert (vae.module.tile_sample_min_size, vae.module.tile_latent_min_size) == (16, 8)
    zt = vae.encode(x)
    assert zt.shape == z.shape and torch.isfinite(zt).all() and not torch.equal(zt, z)  # tiles really ran
    assert vae.decode(zt).shape == y.shape
    vae.set_memory_mode("sliced")
    assert vae.module.use_slicing and not vae.module.use_tiling
    vae.set_memory_mode("plain")
    assert not vae.module.use_slicing and not vae.module.use_tiling
    torch.testing.assert_close(vae.encode(x), z)


def test_tiny_pth_tiling_runs_the_latent_resolution_stages_whole(tiny_pth_dir, monkeypatch):
    """The TAEF2 layout tiles only its image-resolution stages; the pool blocks see the whole latent grid."""
    vae = _pth_vae(tiny_pth_dir)
    x = photos(1, 64)
    vae.set_memory_mode("tiled", tile_size=32)
    seen = []
    for block in (m for m in vae.module.modules() if getattr(m, "pool", None) is not None):
        block.register_forward_pre_hook(lambda mod, args: seen.append(tuple(args[0].shape[-2:])))
    z = vae.encode(x)
    y = vae.decode(z)
    assert z.shape == (1, 32, 8, 8) and y.shape == (1, 3, 64, 64)
    assert seen and set(seen) == {(8, 8)}  # never a 4x4 tile of the latent grid
    assert torch.isfinite(y).all()


def test_real_taef2_tiled_stays_close_to_plain(taef2_dir):
    vae = _vae("tiny.TinyAdapter", taef2_dir, "flux2", weights_prefix="taef2")
    import skimage.data

    from evalvae.data.transforms import Geometry

    image, _ = Geometry(256).apply(skimage.data.astronaut())
    x = image[None].float() / 127.5 - 1
    z = vae.encode(x)
    y = vae.decode(z)
    vae.set_memory_mode("tiled", tile_size=128)
    yt = vae.decode(z)
    rt = vae.decode(vae.encode(x))
    # measured: 48.0 dB (decode) and +0.03 dB; the seams cost little against a 29.4 dB reconstruction
    assert psnr(y, yt) > 44
    assert abs(psnr(x, rt) - psnr(x, y)) < 0.5


def test_a_mode_a_family_cannot_run_is_refused_not_replaced():
    from tests.bench_standins import StandIn

    vae = StandIn("standin")
    assert vae.memory_modes == ("plain", "sliced")
    with pytest.raises(UnsupportedMemoryMode, match="'standin'.*no tiled mode"):
        vae.set_memory_mode("tiled")
    assert vae.memory_mode == "plain"
    with pytest.raises(ConfigError, match="memory mode='fast'; choose one of plain, tiled, sliced"):
        vae.set_memory_mode("fast")
    with pytest.raises(ConfigError, match="tile_size=20.*multiple of 8"):
        StandIn("s", tiled=True).set_memory_mode("tiled", tile_size=20)
