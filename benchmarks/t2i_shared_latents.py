"""Time saved by shared latents: one `task=t2i` run with three VAEs against three runs with one VAE each.

    python benchmarks/t2i_shared_latents.py [--pipeline DIR --vaes DIR_A DIR_B DIR_C] [--steps 20] [--size 128]
        [--prompts 8] [--repeats 3] [--device auto] [--threads N]

Without ``--pipeline`` a tiny StableDiffusionPipeline and three tiny 8x VAEs are built offline
(the test suite's), so the numbers say how evalvae's own machinery scales, not how SD 1.5 does:
the saving grows with the denoiser's share of the cost. Both sides are full ``run()`` calls into
fresh directories with ``metrics=default`` and no CLIP score; the shared run also scores the two
non-reference VAEs against the reference, which the single-VAE runs cannot. Repeats alternate
the two so that drift in machine load affects both alike; medians are reported, with the
generation and decode breakdown from ``generation.csv`` and ``timings.csv``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's evalvae and tests

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from evalvae.config import compose  # noqa: E402
from evalvae.run import run  # noqa: E402

VAES = ("kl-f8", "ft-ema", "ft-mse")


def overrides(args, sources: dict[str, str], out_vaes: list[str]) -> list[str]:
    return [
        "task=t2i",
        "pipeline=local",
        f"pipeline.source={args.pipeline}",
        f"pipeline.steps={args.steps}",
        f"pipeline.height={args.size}",
        f"pipeline.width={args.size}",
        f"pipeline.batch_size={args.batch_size}",
        f"suite.limit={args.prompts}",
        "metrics=default",
        "t2i.clip_score=null",
        f"t2i.batch_size={args.batch_size}",
        "progress=false",
        "report=false",
        f"device={args.device}",
        f"+vae=[{','.join(out_vaes)}]",
        *(f"vae.{v}.source={sources[v]}" for v in out_vaes),
    ]


def timed_run(args, sources, vaes) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        run(compose(overrides(args, sources, vaes)), out_dir=out)
        wall = time.perf_counter() - start
        gen = pd.read_csv(Path(out) / "generation.csv").iloc[0]
        dec = pd.read_csv(Path(out) / "timings.csv")
        return wall, {
            "generate_s": float(gen.generate_s),
            "load_s": float(gen.load_s),
            "decode_s": float(dec.decode_s.sum()),
            "denoiser_calls": int(gen.denoiser_calls),
        }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pipeline", help="a local diffusers pipeline folder (default: build the tiny one)")
    p.add_argument("--vaes", nargs=3, metavar="DIR", help="three diffusers AutoencoderKL folders matching the pipeline")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        if args.pipeline is None:
            from tests.t2i_helpers import save_tiny_sd_pipeline, save_tiny_vae

            args.pipeline = str(save_tiny_sd_pipeline(Path(tmp) / "pipeline"))
            args.vaes = [str(args.pipeline), *(str(save_tiny_vae(Path(tmp) / f"vae{i}", seed=i)) for i in (1, 2))]
        sources = dict(zip(VAES, args.vaes))
        timed_run(args, sources, [VAES[0]])  # warm-up
        shared, separate, parts = [], [], {}
        for _ in range(args.repeats):
            wall, parts["shared"] = timed_run(args, sources, list(VAES))
            shared.append(wall)
            walls, singles = zip(*(timed_run(args, sources, [v]) for v in VAES))
            separate.append(sum(walls))
            parts["separate"] = {k: sum(s[k] for s in singles) for k in singles[0]}

    s, t = statistics.median(shared), statistics.median(separate)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device in ("auto", "cuda") else "cpu"
    print(
        f"{args.prompts} prompts x 1 seed, {args.steps} steps, {args.size}px, batch {args.batch_size}, device {device}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"one run, three VAEs (shared latents): {s:.2f} s   runs: {', '.join(f'{x:.2f}' for x in shared)}")
    print(f"three runs, one VAE each:             {t:.2f} s   runs: {', '.join(f'{x:.2f}' for x in separate)}")
    print(f"time saved: {t - s:.2f} s ({100 * (1 - s / t):.1f}%); ratio separate / shared: {t / s:.2f}")
    for name, d in parts.items():
        print(
            f"  {name:8s} (last repeat): pipeline load {d['load_s']:.2f} s, generate {d['generate_s']:.2f} s "
            f"({d['denoiser_calls']} denoiser calls), decode {d['decode_s']:.2f} s"
        )


if __name__ == "__main__":
    main()
