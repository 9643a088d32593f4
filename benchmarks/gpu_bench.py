"""The GPU check of ``evalvae bench``: one prepared run that takes a few minutes on an H100.

An AutoencoderKL with the SD 1.x VAE's architecture (random weights: the real VAE's compute and
memory, not its outputs) and TAEF2 (real weights), at 256, 512, 1024 and 2048 px, batch 1, in
fp32, fp16 and bf16, plain and tiled. TAEF2 runs first, so a run cut short still covers both
families at the smaller sizes.

    python benchmarks/gpu_bench.py --taef2 /path/to/taef2 --out OUT_DIR [--images DIR] [--timeout 420]

Writes into ``OUT_DIR`` (5 files): ``bench-<gpu>.csv`` (the bench's tidy table), ``bench-<gpu>.json``
(environment and options), ``bench-<gpu>-time.png``, ``bench-<gpu>-memory.png`` and
``bench-<gpu>.log``, where ``<gpu>`` is the device name as a slug (``nvidia-h100-80gb-hbm3``).
The bench writes its CSV after every configuration; if it runs past ``--timeout`` it is stopped
and the rows so far are kept, with plots drawn from them.

``--smoke`` checks this script on any machine in a minute: a tiny AutoencoderKL, 32 and 64 px,
on CPU. It checks first that the packages evalvae needs here import (:data:`NEEDED`; scikit-image
for the built-in photos, unless ``--images`` gives a folder).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]  # evalvae and sd_vae_random from this checkout
# what `python -m evalvae bench` imports on this path (scikit-image too, unless --images is given)
NEEDED = [
    "torch",
    "torchvision",
    "numpy",
    "PIL",
    "diffusers",
    "huggingface_hub",
    "safetensors",
    "hydra",
    "omegaconf",
    "pandas",
    "matplotlib",
    "tqdm",
    "evalvae",
]


def grid(smoke: bool) -> list[str]:
    if smoke:
        return [
            "device=cpu",
            "bench.isolate=none",
            "bench.resolutions=[32,64]",
            "bench.tile_size=32",
            "bench.warmup=1",
            "bench.repeats=2",
            "bench.min_repeats=1",
        ]
    # 2 warm-up calls (CUDA lazy initialisation, cuDNN heuristics), then timed calls until 1.5 s
    # or 10 calls, at least 3: bounds the slowest configurations (2048 px fp32) to a few seconds.
    return [
        "device=cuda",
        "bench.resolutions=[256,512,1024,2048]",
        "bench.warmup=2",
        "bench.repeats=10",
        "bench.min_repeats=3",
        "bench.max_seconds=1.5",
    ]


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"


def bench_command(taef2: Path, sd1: Path, images: Path | None, work: Path, smoke: bool) -> list[str]:
    dataset = ["dataset=folder", f"dataset.path={images}"] if images else []
    return [
        sys.executable,
        "-m",
        "evalvae",
        "bench",
        "+vae=taef2",
        f"vae.taef2.source={taef2}",
        "+vae.sd1-random._target_=evalvae.vae.kl.KLAdapter",
        f"+vae.sd1-random.source={sd1}",
        "+vae.sd1-random.latent_space=sd",
        "bench.batch_sizes=[1]",
        "bench.dtypes=[fp32,fp16,bf16]",
        "bench.modes=[plain,tiled]",
        *grid(smoke),
        *dataset,
        f"cache_dir={work / 'cache'}",
        f"hydra.run.dir={work / 'run'}",
    ]


def collect(run_dir: Path, out: Path, log_text: str) -> list[Path]:
    """Copy the results into ``out`` under the device's slug; draw the plots if the run did not."""
    import json

    from evalvae.bench.plots import write_plots
    from evalvae.bench.results import read_bench_csv

    csv = run_dir / "bench.csv"
    if not csv.is_file():
        raise SystemExit(f"no {csv}: the bench stopped before its first configuration; see the log above")
    info = json.loads((run_dir / "bench.json").read_text())
    name = slug(info["environment"]["device_name"])
    out.mkdir(parents=True, exist_ok=True)
    df = read_bench_csv(csv)
    plots = {p.name: p for p in run_dir.glob("bench_*_b1.png")}
    if len(plots) < 2:  # stopped by the timeout before plotting
        plots = {p.name: p for p in write_plots(df, run_dir)}
    files = [
        out / f"bench-{name}.csv",
        out / f"bench-{name}.json",
        out / f"bench-{name}-time.png",
        out / f"bench-{name}-memory.png",
    ]
    for src, dst in zip([csv, run_dir / "bench.json", plots["bench_time_b1.png"], plots["bench_memory_b1.png"]], files):
        shutil.copyfile(src, dst)
    log = out / f"bench-{name}.log"
    log.write_text(log_text, encoding="utf-8")
    return [*files, log]


def run_streaming(cmd: list[str], env: dict, cwd: Path, timeout: float) -> tuple[str, int]:
    """Run ``cmd``, echoing its output as it comes; kill it after ``timeout`` s (exit code 124)."""
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    lines = []
    for line in proc.stdout:
        print(line, end="", flush=True)
        lines.append(line)
    code = proc.wait()
    stopped = not timer.is_alive() and code != 0
    timer.cancel()
    if stopped:
        lines.append(f"[stopped after {timeout:.0f} s]\n")
        print(lines[-1], end="", flush=True)
        return "".join(lines), 124
    return "".join(lines), code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--taef2",
        type=Path,
        default=os.environ.get("TAEF2_DIR"),
        help="folder with taef2_encoder.pth and taef2_decoder.pth",
    )
    parser.add_argument("--out", type=Path, default=os.environ.get("OUT"), help="where the results go")
    parser.add_argument("--images", type=Path, default=None, help="a folder of photos (default: the built-in photos)")
    parser.add_argument(
        "--timeout", type=float, default=420.0, help="seconds before the bench is stopped and its rows so far kept"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny model, 32/64 px, CPU: checks this script")
    args = parser.parse_args()
    if args.taef2 is None or args.out is None:
        parser.error("--taef2 and --out (or $TAEF2_DIR and $OUT) are required")
    missing = [m for m in NEEDED + ([] if args.images else ["skimage"]) if importlib.util.find_spec(m) is None]
    if missing:
        print(f"gpu_bench: missing Python packages: {', '.join(missing)}", file=sys.stderr)
        return 2
    import torch

    if not args.smoke and not torch.cuda.is_available():
        print("gpu_bench: no CUDA device visible to torch; use --smoke to check the script on CPU", file=sys.stderr)
        return 2
    print(
        f"torch {torch.__version__}, CUDA {torch.version.cuda}, device {torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}",
        flush=True,
    )

    from sd_vae_random import write

    start = time.perf_counter()
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    with tempfile.TemporaryDirectory(prefix="evalvae-gpu-bench-") as tmp:
        work = Path(tmp)
        sd1 = write(work / "sd1-random", tiny=args.smoke)
        cmd = bench_command(args.taef2.resolve(), sd1, args.images.resolve() if args.images else None, work, args.smoke)
        print(" ".join(cmd), flush=True)
        log_text, code = run_streaming(cmd, env, work, args.timeout)
        files = collect(work / "run", args.out, log_text)
    print(
        f"gpu_bench: exit {code} after {time.perf_counter() - start:.0f} s; wrote " + ", ".join(str(f) for f in files)
    )
    return 0 if code in (0, 124) else code


if __name__ == "__main__":
    sys.exit(main())
