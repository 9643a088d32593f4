"""End-to-end cost of `run` against a bare encode+decode loop of the same model on the same tensors.

    python benchmarks/run_overhead.py --images $EVALVAE_TEST_ASSETS/images/coco-val2017-mini \
        --weights $EVALVAE_TEST_ASSETS/weights/taef2 [--resolution 256] [--batch-size 8] [--repeats 2] \
        [--set samples.worst=0 ...]

The bare loop gets every advantage: images already decoded, resized and stacked in memory, no
metrics, no result files. (`run`'s end-of-run report is switched off here: it is measured on its
own, see README.) `run` reads and decodes the JPEGs in a worker, scores PSNR and SSIM,
and writes every result table. Both use the same batch size and memory format. Repeats alternate
the two so that drift in machine load affects both alike. Prints the ratio run / bare.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from evalvae.config import compose
from evalvae.data import folder
from evalvae.metrics import from_uint8
from evalvae.run import run
from evalvae.vae import load_vae


def bare_loop(vae, batches: list[torch.Tensor]) -> float:
    start = time.perf_counter()
    for images in batches:
        x = from_uint8(images).contiguous(memory_format=torch.channels_last)
        vae.decode(vae.encode(x).contiguous(memory_format=torch.channels_last))
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="another override of the run")
    args = p.parse_args()

    overrides = [
        "+vae=taef2",
        f"vae.taef2.source={args.weights}",
        "dataset=folder",
        f"dataset.path={args.images}",
        f"dataset.resolution={args.resolution}",
        f"batch_size={args.batch_size}",
        "progress=false",
        "report=false",
        # every repeat computes: no result chunk or latent shard of an earlier repeat is read
        "cache.results=false",
        "cache.latents=false",
    ]
    if args.limit:
        overrides.append(f"dataset.limit={args.limit}")
    overrides += args.set
    cfg = compose(overrides)

    ds = folder(args.images, resolution=args.resolution, limit=args.limit)
    images = torch.stack([s.image for s in (ds[i] for i in range(len(ds))) if s.image is not None])
    batches = list(images.split(args.batch_size))
    vae = load_vae("taef2", cfg.vae.taef2, device="cpu")
    vae.module.to(memory_format=torch.channels_last)
    bare_loop(vae, batches[:1])  # warm-up

    bare, full = [], []
    for _ in range(args.repeats):
        bare.append(bare_loop(vae, batches))
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            outcome = run(cfg, out_dir=out)
            full.append(time.perf_counter() - start)
            stages = outcome.summary
    b, f = statistics.median(bare), statistics.median(full)
    n = len(images)
    print(f"images: {n} at {args.resolution}px, batch {args.batch_size}, torch threads {torch.get_num_threads()}")
    print(
        f"bare encode+decode loop: {b:.2f} s ({1000 * b / n:.1f} ms/image)   runs: {', '.join(f'{t:.2f}' for t in bare)}"
    )
    print(
        f"run() end to end:        {f:.2f} s ({1000 * f / n:.1f} ms/image)   runs: {', '.join(f'{t:.2f}' for t in full)}"
    )
    print(f"ratio run / bare: {f / b:.3f}")
    print(stages.to_string(index=False))


if __name__ == "__main__":
    main()
