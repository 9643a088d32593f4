"""What the real LPIPS and rFID/KID networks cost on this machine, and their share of a ``metrics=all`` run.

    python benchmarks/real_metrics_cost.py --assets $EVALVAE_TEST_ASSETS --weights $EVALVAE_TEST_WEIGHTS [--limit 24]

1. ms/image of LPIPS (alex, vgg) and of the FID Inception features (clean, legacy) at 256 and
   512 px, batch 8, measured on Kodak photos (median of 3 timed calls after one warm-up).
2. An end-to-end run of 1 and then 3 real tiny VAEs with ``metrics=all`` into a cold cache:
   each stage's share of the wall time, from ``timings.csv``.
3. How many images the Inception saw in each run: the originals must be featurised once per
   dataset (N + k*N for k VAEs), whatever the number of VAEs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from evalvae.config import compose, instantiate
from evalvae.metrics.features import InceptionV3
from evalvae.metrics.lpips import LPIPS
from evalvae.run import run

INCEPTION = "fid/pt_inception-2015-12-05_torch-fidelity.pth"
BACKBONES = {"alex": "lpips/alexnet_features.pth", "vgg": "lpips/vgg16_features.pth"}


def kodak_batch(assets: Path, resolution: int, n: int = 8) -> torch.Tensor:
    ds = instantiate(
        compose(
            ["dataset=folder", f"dataset.path={assets / 'images' / 'kodak'}", f"dataset.resolution={resolution}"]
        ).dataset
    )
    return torch.stack([ds[i].image for i in range(n)])


def ms_per_image(fn, n: int, repeats: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times) / n


def micro(assets: Path, weights: Path) -> pd.DataFrame:
    rows = []
    for res in (256, 512):
        u8 = kodak_batch(assets, res)
        orig = u8.double()
        rec = (
            (orig + torch.randn(orig.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 8)
            .clamp(0, 255)
            .round()
        )
        for net, f in BACKBONES.items():
            m = LPIPS(net=net, backbone_weights=str(weights / f))
            rows.append(
                {
                    "metric": f"lpips-{net}",
                    "resolution": res,
                    "ms_per_image": ms_per_image(lambda m=m, orig=orig, rec=rec: m(orig, rec), len(u8)),
                }
            )
        for resize in ("clean", "legacy"):
            ext = InceptionV3(weights=str(weights / INCEPTION), resize=resize)
            rows.append(
                {
                    "metric": f"inception-{resize}",
                    "resolution": res,
                    "ms_per_image": ms_per_image(lambda ext=ext, u8=u8: ext(u8), len(u8)),
                }
            )
    return pd.DataFrame(rows)


def end_to_end(assets: Path, weights: Path, limit: int, vaes: list[str], tmp: Path) -> tuple[pd.DataFrame, int]:
    seen = {"n": 0}
    call = InceptionV3.__call__

    def counting(self, images):
        seen["n"] += len(images)
        return call(self, images)

    sources = []
    for v in vaes:
        folder = assets / "weights" / ("taef2" if v == "taef2" else "taesd-family")
        sources.append(f"vae.{v}.source={folder}")
    cfg = compose(
        [
            f"+vae=[{','.join(vaes)}]",
            *sources,
            "dataset=folder",
            f"dataset.path={assets / 'images' / 'kodak'}",
            f"dataset.limit={limit}",
            "metrics=all",
            f"metrics.fid.weights={weights / INCEPTION}",
            f"metrics.lpips.backbone_weights={weights / BACKBONES['alex']}",
            f"cache_dir={tmp / 'cache'}",
            "progress=false",
            "report=false",
        ]
    )
    InceptionV3.__call__ = counting
    try:
        run(cfg, out_dir=tmp / "run")
    finally:
        InceptionV3.__call__ = call
    return pd.read_csv(tmp / "run" / "timings.csv"), seen["n"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--assets", type=Path, required=True)
    p.add_argument("--weights", type=Path, required=True, help="the folder make-weights wrote")
    p.add_argument("--limit", type=int, default=24)
    args = p.parse_args()
    torch.set_grad_enabled(False)

    print(f"torch threads: {torch.get_num_threads()}\n")
    table = micro(args.assets, args.weights)
    print("1. per image, batch 8 (CPU):")
    print(
        table.pivot(index="metric", columns="resolution", values="ms_per_image").to_string(
            float_format=lambda v: f"{v:.1f} ms"
        )
    )

    stages = ["load_s", "data_s", "encode_s", "decode_s", "metrics_s", "features_s", "set_metrics_s"]
    for vaes in (["taef2"], ["taef2", "taesd", "taesd3"]):
        with tempfile.TemporaryDirectory() as tmp:
            timings, seen = end_to_end(args.assets, args.weights, args.limit, vaes, Path(tmp))
        n = int(timings["n_images"].iloc[0])
        total = timings["total_s"].sum()
        share = {s: 100 * timings[s].sum() / total for s in stages}
        print(
            f"\n2. {len(vaes)} VAE(s) ({', '.join(vaes)}), {n} Kodak images at 256, metrics=all, cold cache: {total:.1f} s"
        )
        print("   share of wall time: " + ", ".join(f"{s[:-2]} {v:.0f}%" for s, v in share.items()))
        print(
            f"   PSNR+SSIM+LPIPS {1000 * timings['metrics_s'].sum() / (n * len(vaes)):.1f} ms/image, "
            f"Inception (originals once + reconstructions) {1000 * timings['features_s'].sum() / seen:.1f} ms/image featurised"
        )
        print(
            f"3. images the Inception saw: {seen} = {n} originals + {len(vaes)} x {n} reconstructions: "
            f"{'yes' if seen == n * (len(vaes) + 1) else 'NO'}, originals featurised once"
        )


if __name__ == "__main__":
    main()
