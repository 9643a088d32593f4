"""Images too small for a metric or a VAE: one documented behaviour each, and the rest of the run unaffected.

* SSIM and LPIPS on an image with a side below their smallest input are NaN, with both SSIM backends,
  and summary.csv's note says how many images have no value and why;
* a latent of any shape and memory format (1x1 under channels_last) goes through the latent cache;
* an image with a side below a VAE's downsampling factor is skipped for that VAE (skipped.csv), and
  ``dataset.resolution`` below a VAE's factor fails that VAE with an error naming the argument.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from evalvae.jobs.chunks import ChunkStore
from evalvae.run import run
from tests.helpers import compose_run, photo


# -- the latent cache ------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 4, 1, 1), (3, 4, 1, 1), (2, 16, 5, 1), (2, 16, 1, 5), (1, 1, 1, 1)])
def test_chunks_hold_latents_of_any_shape_and_memory_format(tmp_path, shape):
    """A conv's 1x1 output under channels_last is "contiguous" with stride(-1) = C, which a byte view refuses."""
    conv = torch.nn.Conv2d(3, shape[1], 3, stride=8, padding=1).to(memory_format=torch.channels_last)
    x = torch.randn(shape[0], 3, 8 * shape[2], 8 * shape[3]).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        z = conv(x)
    assert z.shape == shape
    store = ChunkStore(tmp_path)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        key = f"latents-{dtype}"
        store.write(key, {"latents": z.to(dtype)})
        got, _ = store.read(key)
        assert got["latents"].dtype == dtype and torch.equal(got["latents"], z.to(dtype))
    # the checksum is of the values in logical order: the same latents in the default format make the same file
    store.write("plain", {"latents": z.contiguous()})
    assert store.path("plain").read_bytes() == store.path(f"latents-{torch.float32}").read_bytes()


# -- end to end: tiny stand-ins on images of mixed sizes ---------------------------------------------
def write(root: Path, sizes: dict[str, tuple[int, int]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, (name, (h, w)) in enumerate(sizes.items()):
        Image.fromarray(photo(h, w, seed=i)).save(root / name)
    return root


NORMAL = {"a.png": (40, 56), "b.png": (48, 48), "f.png": (64, 40)}
TINY = {"c_8x8.png": (8, 8), "d_40x8.png": (40, 8)}  # below SSIM's 11 px; at f8, latents 1x1 and 5x1
UNDER = {"e_5x30.png": (5, 30)}  # below the factor of an f8 VAE


def taef2(pth_dir) -> list[str]:
    return ["+vae=taef2", f"vae.taef2.source={pth_dir}", "vae.taef2.sha256=null", "vae.taef2.weights_prefix=tiny"]


def kl(kl_dir) -> list[str]:
    return ["+vae.kl._target_=evalvae.vae.kl.KLAdapter", f"+vae.kl.source={kl_dir}", "+vae.kl.latent_space=sd"]


def common(images, *extra) -> list[str]:
    return ["dataset=folder", f"dataset.path={images}", "dataset.crop=none", "device=cpu", "workers=0", *extra]


def per_image(out) -> pd.DataFrame:
    return pd.read_parquet(out / "per_image.parquet").set_index(["vae", "image"])


def test_one_pixel_latents_go_through_the_latent_cache_under_channels_last(tmp_path, tiny_pth_dir):
    images = write(tmp_path / "images", {**NORMAL, **TINY})
    overrides = [*taef2(tiny_pth_dir), *common(images, "~metrics.ssim", "channels_last=true", "batch_size=2")]
    first = run(compose_run(overrides), out_dir=tmp_path / "first")
    assert not first.failed and json.loads((first.out_dir / "vaes.json").read_text())[0]["status"] == "ok"
    rows = per_image(first.out_dir)
    assert len(rows) == 5 and rows.loc[("taef2", "c_8x8.png"), ["height", "width"]].tolist() == [8, 8]
    assert rows["psnr"].notna().all()
    # the same images again, results not cached: every latent is read back from the cache, checksum and all
    again = run(compose_run([*overrides, "cache.results=false"]), out_dir=tmp_path / "again")
    timing = pd.read_csv(again.out_dir / "timings.csv").iloc[0]
    assert (timing.images_encoded, timing.latents_cached) == (0, 5)
    pd.testing.assert_series_equal(per_image(again.out_dir)["psnr"], rows["psnr"])  # the same latents decoded
