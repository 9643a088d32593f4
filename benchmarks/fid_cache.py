"""Cost of rFID/KID features and what the reference cache saves on a second run.

    python benchmarks/fid_cache.py --images $EVALVAE_TEST_ASSETS/images/coco-val2017-mini \
        --weights $EVALVAE_TEST_ASSETS/weights/taef2 [--inception PATH] [--limit N]

Runs TAEF2 with metrics=all twice into a fresh cache: the first run extracts features of the
reconstructions and of the originals (and caches the latter); the second, with another VAE
setting (bf16), must extract only the reconstructions'. Without --inception the network has
random weights of the right shape: the timing is real, the rFID values are not and are not shown.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd
import torch

from evalvae.config import compose
from evalvae.run import run


def random_inception(path: Path) -> Path:
    """torch-fidelity's Inception with random weights, saved as a weights file (timing only)."""
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    cls, load, fetch = (
        tfi.FeatureExtractorInceptionV3,
        tfi.FeatureExtractorInceptionV3.load_state_dict,
        tfi.load_state_dict_from_url,
    )
    cls.load_state_dict, tfi.load_state_dict_from_url = (lambda self, *a, **k: None), (lambda *a, **k: {})
    try:
        net = cls("random", ["2048"])
    finally:
        cls.load_state_dict, tfi.load_state_dict_from_url = load, fetch
    torch.save(net.state_dict(), path)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", required=True)
    p.add_argument("--weights", required=True, help="folder with taef2_encoder.pth / taef2_decoder.pth")
    p.add_argument("--inception", default=None, help="FID Inception weights (default: random, timing only)")
    p.add_argument("--limit", type=int, default=None)
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inception = args.inception or str(random_inception(tmp / "random-inception.pth"))
        common = [
            "+vae=taef2",
            f"vae.taef2.source={args.weights}",
            "dataset=folder",
            f"dataset.path={args.images}",
            "metrics=all",
            f"metrics.fid.weights={inception}",
            f"cache_dir={tmp / 'cache'}",
            "progress=false",
            "report=false",
        ]
        if args.limit:
            common.append(f"dataset.limit={args.limit}")
        rows = []
        for label, extra in [
            ("first run (cache empty)", []),
            ("second run, bf16 VAE (cache warm)", ["vae.taef2.dtype=bf16"]),
        ]:
            run(compose(common + extra), out_dir=tmp / label.split()[0])
            t = pd.read_csv(tmp / label.split()[0] / "timings.csv").iloc[0]
            rows.append(
                {
                    "run": label,
                    "images": int(t.n_images),
                    "total_s": t.total_s,
                    "encode_s": t.encode_s,
                    "decode_s": t.decode_s,
                    "metrics_s": t.metrics_s,
                    "features_s": t.features_s,
                }
            )
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    first, second = table.iloc[0], table.iloc[1]
    n = first.images
    print(
        f"\nfeature extraction, first run: {first.features_s:.1f} s for {2 * n} images (originals + reconstructions)"
        f" = {1000 * first.features_s / (2 * n):.1f} ms/image"
    )
    print(
        f"feature extraction, second run: {second.features_s:.1f} s for {n} reconstructions = {1000 * second.features_s / n:.1f} ms/image"
    )
    print(
        f"saved by the reference cache: {first.features_s - second.features_s:.1f} s "
        f"({100 * (first.features_s - second.features_s) / first.total_s:.0f}% of the first run's wall time)"
    )


if __name__ == "__main__":
    main()
