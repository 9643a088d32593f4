"""What evalvae's reconstruction job costs on one GPU: one prepared run of a few minutes, four parts.

    python benchmarks/gpu_suite.py --out DIR [--device auto|cpu|cuda] [--tiny] [--images N]
        [--budget SECONDS] [--parts a,b,c,d] [--precisions bf16,fp32,tf32] [--batch-size auto|N] [--compile]

(a) Decode throughput inside a run against a tight loop of the same model, batch and precision, at
    256 and 512 px, fp32 and bf16. The run is ``evalvae.run.run`` (what ``python -m evalvae run``
    calls) in this process; its decode images/s come from its own ``timings.csv`` (stage ``decode``,
    synchronised at the stage's ends). The tight loop calls the adapter's ``decode`` on latents already
    on the device, after 2 warm-up calls, synchronised once at each end. Ratio: run / tight.
(b) The card-size job: ``python -m evalvae run`` on N distinct 256 px images (5,000 on a GPU) with
    three SD 1.x-architecture VAEs sharing one encoder (``+vae=[kl-f8,ft-ema,ft-mse]``), PSNR, SSIM,
    LPIPS and rFID, and the report; wall time from starting the process to its exit. Achieved TFLOPS:
    the floor FLOPs (1 encode + 3 decodes + the Inception and LPIPS trunk on the original and the 3
    reconstructions, per image; counted with ``FlopCounterMode``) over that wall time, and the fraction
    of the device's dense peak for the precision (null for a device not in :data:`PEAKS`).
(c) The same job scripted without evalvae (``benchmarks/peer_recon.py``: diffusers, torchmetrics,
    lpips, clean-fid) on the same images, networks, batch and precision. Ratio: evalvae wall / peer wall.
(d) evalvae's dataloader alone over the job's images, with the run's worker count and with none.

Every network is random (``benchmarks/random_nets.py``: nothing is downloaded) and the images are
seeded synthetic PNGs written by one process per core (timed apart, not part of any job). The cheap
parts run first (a, d), then per precision the evalvae job and the peer's, bf16 first (the fastest, so
the likeliest to give a ratio), so that a run cut short by ``--budget`` (default 420 s on a GPU, from
the script's start) still has one; a case expected to take longer than what is left (the last case of
its part took that long) is skipped, and a job still running when the budget ends is stopped, each
with its reason recorded. Each precision's FLOPs are compared with its own peak: fp32 is IEEE float32
in evalvae and in the peer script (TF32 off, which torch leaves on for cuDNN's convolutions by default).

Without a CUDA device (or with ``--tiny``) a 3-block, 8-16 channel VAE, 64 and 128 px, 12 images and
fp32 jobs check the script in about two minutes on 2 cores; its timings mean nothing.

Writes ``DIR/gpu-<device>.json`` (environment, options, FLOPs, every part's cases with their ratios)
and ``DIR/gpu-<device>.csv`` (one row per measurement: :data:`COLUMNS`), both rewritten after every
case; ``<device>`` is the CUDA device's name as a slug (``nvidia-h100-80gb-hbm3``), or ``cpu``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.util
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]  # evalvae and random_nets from this checkout

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

COLUMNS = [
    "part",
    "case",
    "resolution",
    "precision",
    "batch",
    "workers",
    "images",
    "seconds",
    "images_per_s",
    "ratio",
    "tflops",
    "peak_fraction",
    "status",
    "note",
]
# Dense tensor-core peaks in TFLOPS (vendor datasheets), matched against torch.cuda.get_device_name in order.
PEAKS = [
    (r"H100.*PCIe", {"bf16": 756.0, "fp16": 756.0, "tf32": 378.0, "fp32": 51.0}),
    (r"H100.*NVL", {"bf16": 835.0, "fp16": 835.0, "tf32": 418.0, "fp32": 60.0}),
    (r"H100|H200|GH200", {"bf16": 989.0, "fp16": 989.0, "tf32": 494.0, "fp32": 67.0}),
    (r"A100", {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}),
]
# what the suite imports, and what (c) imports besides (it is skipped without them)
NEEDED = ["torch", "torchvision", "numpy", "PIL", "scipy", "diffusers", "safetensors", "hydra", "omegaconf", "pandas",
          "matplotlib", "lpips", "torch_fidelity", "evalvae"]  # fmt: skip
NEEDED_PEER = ["torchmetrics", "cleanfid"]
VAES = ("kl-f8", "ft-ema", "ft-mse")
TARGET_RATIO = 0.33  # evalvae's job wall over the peer's, on a GPU
METRICS = ("psnr", "ssim", "lpips", "rfid")


@dataclass(frozen=True)
class Scale:
    """The sizes of one suite."""

    tiny: bool
    images: int  # the job's images (b, c, d)
    resolution: int  # the job's side, and (a)'s first size
    high: int  # (a)'s second size
    a_images: tuple[int, int]  # (a)'s images at each size
    batch: str  # "auto" or a count: what the runs are given
    fallback_batch: int  # the count where a run cannot take "auto", and for the loops when a run did not say
    precisions: tuple[str, ...]  # of the jobs (b, c)
    budget: float


def scale_for(args, cuda: bool) -> Scale:
    tiny = args.tiny or not cuda
    images = args.images or (12 if tiny else 5000)
    return Scale(
        tiny=tiny,
        images=images,
        resolution=64 if tiny else 256,
        high=128 if tiny else 512,
        a_images=(min(images, 12), 8) if tiny else (min(images, 1024), 256),
        batch=args.batch_size or ("auto" if cuda else "4"),
        fallback_batch=4 if tiny else 32,
        precisions=tuple(args.precisions.split(","))
        if args.precisions
        else (("fp32",) if tiny else ("bf16", "fp32", "tf32")),
        budget=args.budget or (900.0 if tiny else 420.0),
    )


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"


def peak_tflops(device_name: str, basis: str) -> float | None:
    return next((p.get(basis) for pattern, p in PEAKS if re.search(pattern, device_name)), None)


def finite(x) -> float | None:
    """``x`` as a float when it is a finite number, else None (a missing or non-numeric CSV cell too)."""
    try:
        return float(x) if math.isfinite(float(x)) else None
    except (TypeError, ValueError):
        return None


# -- images --------------------------------------------------------------------------------------------


def synth_image(task: tuple[str, int, int]) -> int:
    """One seeded image: bicubic-smooth random colours, a linear gradient and grain; its PNG's bytes."""
    path, seed, size = task
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (int(rng.integers(3, 12)), int(rng.integers(3, 12)), 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(low).resize((size, size), Image.Resampling.BICUBIC), np.float32)
    yy, xx = np.mgrid[0:size, 0:size] / size
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx + np.sin(angle) * yy)[..., None] * rng.uniform(-80, 80, 3)
    grain = rng.normal(0, rng.uniform(2, 8), (size, size, 3))
    Image.fromarray(np.clip(base + ramp + grain, 0, 255).astype(np.uint8)).save(path, compress_level=1)
    return os.path.getsize(path)


def write_images(folder: Path, n: int, size: int, seed: int) -> dict:
    """``n`` distinct PNGs of ``size`` px in ``folder``, one process per core; what it took."""
    import multiprocessing

    folder.mkdir(parents=True, exist_ok=True)
    tasks = [(str(folder / f"{i:05d}.png"), seed + i, size) for i in range(n)]
    processes = max(1, min(os.cpu_count() or 1, n))
    start = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        sizes = pool.map(synth_image, tasks, chunksize=max(1, n // (4 * processes)))
    seconds = time.perf_counter() - start
    return {"images": n, "resolution": size, "processes": processes, "seconds": seconds, "bytes": sum(sizes)}


# -- the outputs ---------------------------------------------------------------------------------------


class Budget:
    def __init__(self, seconds: float, start: float):
        self.seconds, self.start = seconds, start

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)

    def refuses(self, estimate: float) -> str | None:
        """Why a case expected to take ``estimate`` s cannot start now; None if it can."""
        left = self.left()
        if left <= 0 or estimate > left:
            return f"budget: {max(left, 0):.0f} s left of {self.seconds:.0f} s, the case needs about {estimate:.0f} s"
        return None


class Report:
    """The suite's JSON and CSV, rewritten whole (through a temporary file) after every case."""

    def __init__(self, out: Path, name: str, head: dict, parts: str):
        out.mkdir(parents=True, exist_ok=True)
        self.json_path, self.csv_path = out / f"gpu-{name}.json", out / f"gpu-{name}.csv"
        self.data = {**head, "parts": {p: {"cases": []} for p in parts}, "skipped": []}
        self.rows: list[dict] = []

    def case(self, part: str, case: dict, rows: list[dict]) -> None:
        self.data["parts"][part]["cases"].append(case)
        self.rows += [{"part": part, **r} for r in rows]
        self.write()

    def fail(self, part: str, case: str, error: Exception, **fields) -> None:
        import traceback

        trace = "".join(traceback.format_exception(error))
        print(f"gpu_suite: ({part}) {case} failed:\n{trace}", flush=True)
        reason = f"{type(error).__name__}: {error}"
        self.data["parts"][part]["cases"].append({"case": case, "status": "failed", "error": reason, "trace": trace})
        self.rows.append({"part": part, "case": case, **fields, "status": "failed", "note": reason})
        self.write()

    def skip(self, part: str, case: str, reason: str, **fields) -> None:
        print(f"gpu_suite: ({part}) {case} skipped: {reason}", flush=True)
        self.data["skipped"].append({"part": part, "case": case, "reason": reason})
        self.rows.append({"part": part, "case": case, **fields, "status": "skipped", "note": reason})
        self.write()

    def write(self) -> None:
        tmp = self.json_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, self.json_path)
        tmp = self.csv_path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows({k: r.get(k) for k in COLUMNS} for r in self.rows)
        os.replace(tmp, self.csv_path)


def source_sha256() -> str:
    """sha256 over evalvae's Python files (path and bytes): names the code where there is no git checkout."""
    h = hashlib.sha256()
    for path in sorted((REPO / "evalvae").rglob("*.py")):
        h.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


# -- what this evalvae takes -----------------------------------------------------------------------------


def refusal(overrides: list[str]) -> str | None:
    """Why evalvae's run config refuses ``overrides`` (composed and checked as the CLI would); None if it takes them."""
    from evalvae.config import compose
    from evalvae.jobs.schema import validate

    try:
        validate(compose(overrides))
    except Exception as e:  # an unknown key (Hydra) or a value the schema refuses (evalvae)
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    return None


class Options:
    """The run overrides this suite passes: ``precision``, ``compile`` and ``batch_size`` (``auto`` on a GPU)."""

    def __init__(self, scale: Scale, compile_: bool):
        self.batch, self.compile = scale.batch, compile_

    def precision(self, precision: str, cuda: bool) -> tuple[list[str] | None, str]:
        """The overrides that ask a run for ``precision`` (None: it cannot be asked for here), and why not."""
        if precision == "tf32" and not cuda:
            return None, "tf32 is a CUDA mode (TF32 tensor cores)"
        return ([] if precision == "fp32" else [f"precision={precision}"]), ""

    def run(self) -> list[str]:
        return [f"batch_size={self.batch}", *(["compile=true"] if self.compile else [])]


def batch_of(timings: dict, fallback: int) -> int:
    """The batch size a run reports in ``timings.csv``, else ``fallback``."""
    try:
        return int(float(timings.get("batch_size")))
    except (TypeError, ValueError):
        return fallback


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _number(v: str):
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


# -- the suite -----------------------------------------------------------------------------------------


class Suite:
    def __init__(self, args, scale: Scale, device, name: str, work: Path, report: Report, budget: Budget):
        self.args, self.scale, self.device, self.name = args, scale, device, name
        self.work, self.report, self.budget = work, report, budget
        self.cuda = device.type == "cuda"
        self.walls: dict[str, float] = {}  # part -> wall seconds of its last case (the next one's estimate)
        self.jobs: dict[str, dict] = {}  # precision -> the evalvae job's case (b)
        self.env = dict(
            os.environ,
            HF_HUB_OFFLINE="1",
            TQDM_DISABLE="1",
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        )

    # setup: images, networks, FLOPs, what evalvae takes
    def prepare(self) -> None:
        import random_nets

        s, setup = self.scale, {}
        self.images = self.work / "images"
        self.high_images = self.work / f"images-{s.high}"
        setup["images"] = write_images(self.images, s.images, s.resolution, seed=0)
        setup["images_high"] = write_images(self.high_images, s.a_images[1], s.high, seed=10**6)
        print(
            f"gpu_suite: {s.images} images of {s.resolution} px in {setup['images']['seconds']:.1f} s "
            f"({setup['images']['processes']} processes)",
            flush=True,
        )
        start = time.perf_counter()
        self.vaes = random_nets.write_vaes(self.work / "vaes", tiny=s.tiny)
        self.lpips = random_nets.write_lpips_backbone(self.work / "weights" / "alexnet_features.pth")
        self.inception = random_nets.write_inception(self.work / "weights" / "inception.pth")
        setup["networks_s"] = time.perf_counter() - start
        vae = random_nets.vae_flops(self.vaes["kl-f8"], s.resolution)
        feats = random_nets.feature_flops(s.resolution)
        floor = vae["encode"] + 3 * vae["decode"] + 4 * feats["inception"] + 4 * feats["lpips"]
        self.flops = {
            "per_image_gflop": {k: v / 1e9 for k, v in {**vae, **feats}.items()},
            "floor_per_image_gflop": floor / 1e9,
            "vae_per_image_gflop": (vae["encode"] + 3 * vae["decode"]) / 1e9,
            "floor": "1 encode + 3 decodes + Inception (299 px) and LPIPS-alex trunk on the original and the 3 "
            "reconstructions, per image; PSNR and SSIM not counted",
            "sd_vae_256_gflop_stated": random_nets.SD_VAE_256_GFLOP,
            "model": "tiny AutoencoderKL (random_nets.TINY_CONFIG)" if s.tiny else "SD 1.x AutoencoderKL (random)",
            "resolution": s.resolution,
        }
        self.common = [
            f"device={self.device.type}",
            "progress=false",
            "cache.results=false",  # every case computes: nothing of an earlier one is read
            "cache.latents=false",
        ]
        self.one_vae = ["+vae=kl-f8", f"vae.kl-f8.source={self.vaes['kl-f8']}", "vae.kl-f8.subfolder=null"]
        self.base = [*self.one_vae, *self.dataset(self.images, s.resolution), *self.common]
        self.options = Options(s, self.args.compile)
        self.report.data.update(setup=setup, flops=self.flops)
        self.report.write()

    @staticmethod
    def dataset(folder: Path, resolution: int) -> list[str]:
        return ["dataset=folder", f"dataset.path={folder}", f"dataset.resolution={resolution}"]

    def estimate(self, part: str) -> float:
        return self.walls.get(part, 0.0)

    # (a) --------------------------------------------------------------------------------------------
    def part_a(self) -> None:
        s = self.scale
        for resolution, folder, n in (
            (s.resolution, self.images, s.a_images[0]),
            (s.high, self.high_images, s.a_images[1]),
        ):
            for precision in ("fp32", "bf16"):
                case = f"{resolution}px-{precision}"
                extra, why = self.options.precision(precision, self.cuda)
                why = why if extra is None else self.budget.refuses(self.estimate("a"))
                if why:
                    self.report.skip("a", case, why, resolution=resolution, precision=precision)
                    continue
                start = time.perf_counter()
                try:
                    self.decode_case(case, resolution, folder, n, precision, extra)
                except Exception as e:  # recorded; the other cases still run
                    self.report.fail("a", case, e, resolution=resolution, precision=precision)
                self.walls["a"] = time.perf_counter() - start

    def decode_case(self, case: str, resolution: int, folder: Path, n: int, precision: str, extra: list[str]) -> None:
        import torch

        from evalvae.config import compose
        from evalvae.run import run

        out = self.work / "a" / case
        overrides = [
            *self.one_vae,
            *self.dataset(folder, resolution),
            f"dataset.limit={n}",
            *self.common,
            "report=false",
            "samples.typical=false",
            "samples.worst=0",
            "samples.best=0",
            f"cache_dir={out / 'cache'}",
            *self.options.run(),
            *extra,
        ]
        cfg = compose(overrides)
        start = time.perf_counter()
        run(cfg, out_dir=out / "run")
        wall = time.perf_counter() - start
        timing = read_rows(out / "run" / "timings.csv")[0]
        batch = batch_of(timing, self.scale.fallback_batch)
        tight_s, tight_n = self.tight_decode(cfg, precision, batch, int(timing["n_images"]))
        run_ips, tight_ips = timing["n_images"] / timing["decode_s"], tight_n / tight_s
        result = {
            "case": case,
            "resolution": resolution,
            "precision": precision,
            "batch": batch,
            "batch_from": "the run's timings.csv" if batch_of(timing, 0) else "fallback (timings.csv names no count)",
            "images": int(timing["n_images"]),
            "run_decode_s": timing["decode_s"],
            "run_decode_images_per_s": run_ips,
            "tight_decode_s": tight_s,
            "tight_images": tight_n,
            "tight_decode_images_per_s": tight_ips,
            "ratio_run_over_tight": run_ips / tight_ips,
            "run_wall_s": wall,
            "run_wall_images_per_s": timing["n_images"] / wall,
            "run_timings": timing,
            "overrides": extra + self.options.run(),
        }
        common = {"resolution": resolution, "precision": precision, "batch": batch, "status": "ok"}
        self.report.case(
            "a",
            result,
            [
                {**common, "case": f"{case}-run-decode", "images": result["images"], "seconds": timing["decode_s"],
                 "images_per_s": run_ips, "ratio": run_ips / tight_ips, "note": "ratio: run decode / tight decode"},
                {**common, "case": f"{case}-tight-decode", "images": tight_n, "seconds": tight_s, "images_per_s": tight_ips},
                {**common, "case": f"{case}-run-wall", "images": result["images"], "seconds": wall,
                 "images_per_s": result["run_wall_images_per_s"], "note": "evalvae.run.run, in process"},
            ],
        )  # fmt: skip
        print(f"gpu_suite: (a) {case}: run decode {run_ips:.1f} img/s, tight {tight_ips:.1f} img/s", flush=True)
        if self.cuda:
            torch.cuda.empty_cache()

    def tight_decode(self, cfg, precision: str, batch: int, n: int) -> tuple[float, int]:
        """The adapter's decode of one batch of latents already on the device, called until ``n`` images."""
        import torch
        from omegaconf import OmegaConf

        from evalvae.config import instantiate
        from evalvae.device import synchronize, tf32_available, to_channels_last
        from evalvae.jobs.vaes import load
        from evalvae.metrics import from_uint8
        from evalvae.vocab import PRECISION_DTYPE

        spec = OmegaConf.to_container(cfg.vae["kl-f8"], resolve=True)
        spec["dtype"] = PRECISION_DTYPE[precision]
        vae = load("kl-f8", spec, device=self.device, cache_dir=cfg.cache_dir).vae
        to_channels_last(vae.module)
        vae.tf32 = precision == "tf32" and tf32_available(self.device)  # as the run sets it
        if self.options.compile:
            vae.compile()
        dataset = instantiate(cfg.dataset)
        batch = min(batch, len(dataset))
        images = torch.stack([dataset[i].image for i in range(batch)]).to(self.device)
        x = from_uint8(images).contiguous(memory_format=torch.channels_last)
        z = vae.encode(x).contiguous(memory_format=torch.channels_last)
        calls = max(1, round(n / batch))
        for _ in range(3 if self.options.compile else 2):
            vae.decode(z)
        synchronize(self.device)
        start = time.perf_counter()
        for _ in range(calls):
            vae.decode(z)
        synchronize(self.device)
        seconds = time.perf_counter() - start
        del vae, z
        return seconds, calls * batch

    # (d) --------------------------------------------------------------------------------------------
    def part_d(self) -> None:
        from evalvae.config import compose, instantiate
        from evalvae.data import make_loader
        from evalvae.jobs.runtime import loader_workers

        cfg = compose(self.base)
        batch = self.batch()
        dataset = instantiate(cfg.dataset)
        workers = loader_workers(cfg.workers, self.device)  # as the run chooses them
        ips = {}
        for w in dict.fromkeys([workers, 0]):
            case = f"loader-workers-{w}"
            if why := self.budget.refuses(self.estimate("d")):
                self.report.skip("d", case, why, resolution=self.scale.resolution, workers=w)
                continue
            start = time.perf_counter()
            n = sum(b.n_images for b in make_loader(dataset, batch, w, self.device))
            seconds = time.perf_counter() - start
            self.walls["d"] = seconds
            ips[w] = n / seconds
            ratio = ips[workers] / ips[0] if w == 0 and workers in ips and workers != 0 else None
            result = {
                "case": case,
                "workers": w,
                "batch": batch,
                "images": n,
                "seconds": seconds,
                "images_per_s": ips[w],
            }
            self.report.case(
                "d",
                result,
                [{"case": case, "resolution": self.scale.resolution, "batch": batch, "workers": w, "images": n,
                  "seconds": seconds, "images_per_s": ips[w], "ratio": ratio, "status": "ok",
                  "note": f"ratio: workers={workers} / workers=0" if ratio is not None else ""}],
            )  # fmt: skip
            print(f"gpu_suite: (d) {case}: {ips[w]:.0f} img/s", flush=True)
        summary = self.report.data["parts"]["d"]
        if workers in ips and 0 in ips:
            summary["workers_speedup"] = ips[workers] / ips[0]
        if workers in ips:  # how many times faster the loader alone is than (a)'s whole runs at the job's size
            summary["loader_over_run_wall"] = {
                c["precision"]: ips[workers] / c["run_wall_images_per_s"]
                for c in self.report.data["parts"].get("a", {}).get("cases", [])
                if c.get("resolution") == self.scale.resolution and c.get("run_wall_images_per_s")
            }
        self.report.write()

    def batch(self) -> int:
        """The batch a run of the job's size took (from (a)'s first run, or (b)), else the fallback."""
        for part in ("b", "a"):
            for c in self.report.data["parts"].get(part, {}).get("cases", []):
                if c.get("batch") and c.get("resolution", self.scale.resolution) == self.scale.resolution:
                    return int(c["batch"])
        return int(self.options.batch) if self.options.batch != "auto" else self.scale.fallback_batch

    # (b) --------------------------------------------------------------------------------------------
    def job_command(self, precision_overrides: list[str], out: Path) -> list[str]:
        return [
            sys.executable,
            "-m",
            "evalvae",
            "run",
            f"+vae=[{','.join(VAES)}]",
            *(f"vae.{name}.source={self.vaes[name]}" for name in VAES),
            *(f"vae.{name}.subfolder=null" for name in VAES),
            *self.dataset(self.images, self.scale.resolution),
            *self.common,
            "metrics=all",
            "metrics.fid.kid=false",
            f"metrics.lpips.backbone_weights={self.lpips}",
            f"metrics.fid.weights={self.inception}",
            "report=true",
            f"cache_dir={out / 'cache'}",
            f"hydra.run.dir={out / 'run'}",
            *self.options.run(),
            *precision_overrides,
        ]

    def part_b(self, precision: str) -> None:
        s = self.scale
        case, fields = f"job-{precision}", {"resolution": s.resolution, "precision": precision, "images": s.images}
        extra, why = self.options.precision(precision, self.cuda)
        why = why if extra is None else self.budget.refuses(self.estimate("b"))
        if why:
            self.report.skip("b", case, why, **fields)
            return
        out = self.work / "b" / precision
        wall, code, log = self.process(self.job_command(extra, out), out / "log.txt")
        self.walls["b"] = wall
        run = out / "run"
        timings = read_rows(run / "timings.csv")
        summary = {(r["vae"], r["metric"]): r["mean"] for r in read_rows(run / "summary.csv")}
        metrics = {v: {m: finite(summary.get((v, m))) for m in METRICS} for v in VAES}
        status = "ok" if code == 0 else ("stopped" if code == 124 else "failed")
        n = s.images if code == 0 else int(max((t.get("n_images", 0) for t in timings), default=0))
        floor = self.flops["floor_per_image_gflop"] * 1e9
        vae_s = sum(t.get("encode_s", 0.0) + t.get("decode_s", 0.0) for t in timings)
        # time spent waiting for the loader's next batch, of the time after loading: near 0 when the GPU bounds the run
        data_s = sum(t.get("data_s", 0.0) for t in timings)
        busy_s = sum(t.get("total_s", 0.0) - t.get("load_s", 0.0) for t in timings)
        basis = self.peak_basis(precision)
        peak = peak_tflops(self.name, basis)
        tflops = floor * n / wall / 1e12 if code == 0 else None  # a job stopped part-way did not do the floor's work
        result = {
            "case": case,
            "precision": precision,
            "status": status,
            "wall_s": wall,
            "images": n,
            "images_per_s": n / wall if code == 0 else None,
            "batch": batch_of(timings[0], 0) if timings else None,
            "achieved_tflops": tflops,
            "peak_basis": basis,
            "peak_tflops": peak,
            "fraction_of_peak": tflops / peak if tflops and peak else None,
            "vae_stages_s": vae_s,
            "vae_stages_tflops": self.flops["vae_per_image_gflop"] * 1e9 * n / vae_s / 1e12 if vae_s else None,
            "data_wait_s": data_s,
            "data_wait_fraction": data_s / busy_s if busy_s > 0 else None,
            "report_written": (run / "report" / "report.html").is_file(),
            "metrics": metrics,
            "timings": timings,
            "overrides": extra + self.options.run(),
            **({"log_tail": log[-4000:]} if code else {}),
        }
        self.jobs[precision] = result
        self.report.case(
            "b",
            result,
            [{"case": case, **fields, "batch": result["batch"], "images": n, "seconds": wall,
              "images_per_s": result["images_per_s"], "tflops": tflops, "peak_fraction": result["fraction_of_peak"],
              "status": status, "note": f"wall of python -m evalvae run; peak basis {basis}"}],
        )  # fmt: skip
        print(f"gpu_suite: (b) {case}: {status}, {wall:.1f} s, {result['images_per_s']} img/s", flush=True)

    def peak_basis(self, precision: str) -> str:
        """The peak a precision's FLOPs are compared with: evalvae's fp32 is IEEE float32 (TF32 off, also for
        cuDNN's convolutions), so its basis is the fp32 peak."""
        return precision

    # (c) --------------------------------------------------------------------------------------------
    def part_c(self, precision: str) -> None:
        from evalvae.jobs.runtime import loader_workers

        s = self.scale
        case, fields = f"peer-{precision}", {"resolution": s.resolution, "precision": precision, "images": s.images}
        missing = [m for m in NEEDED_PEER if importlib.util.find_spec(m) is None]
        why = f"missing Python packages: {', '.join(missing)}" if missing else None
        if precision == "tf32" and not self.cuda:
            why = "tf32 is a CUDA mode (TF32 tensor cores)"
        why = why or self.budget.refuses(self.estimate("c"))
        if why:
            self.report.skip("c", case, why, **fields)
            return
        job = self.jobs.get(precision)
        batch = (job or {}).get("batch") or self.batch()
        workers = loader_workers("auto", self.device)
        out = self.work / "c" / precision
        cmd = [
            sys.executable,
            str(REPO / "benchmarks" / "peer_recon.py"),
            "--images",
            str(self.images),
            *(a for name in VAES for a in ("--vae", f"{name}={self.vaes[name]}")),
            "--lpips-backbone",
            str(self.lpips),
            "--inception",
            str(self.inception),
            "--work",
            str(out / "recon"),
            "--out",
            str(out / "peer.json"),
            "--device",
            str(self.device),
            "--precision",
            precision,
            "--batch-size",
            str(batch),
            "--workers",
            str(workers),
        ]
        wall, code, log = self.process(cmd, out / "log.txt")
        self.walls["c"] = wall
        peer = json.loads((out / "peer.json").read_text()) if code == 0 else {}
        status = "ok" if code == 0 else ("stopped" if code == 124 else "failed")
        ratio = job["wall_s"] / wall if job and job["status"] == "ok" and code == 0 else None
        metrics = {v: {m: finite(peer.get("metrics", {}).get(v, {}).get(m)) for m in METRICS} for v in VAES}
        agreement = {v: {m: _diff(job["metrics"][v][m], metrics[v][m]) for m in METRICS} for v in VAES} if job else None
        result = {
            "case": case,
            "precision": precision,
            "status": status,
            "wall_s": wall,
            "images": s.images,
            "images_per_s": s.images / wall if code == 0 else None,
            "batch": batch,
            "workers": workers,
            "ratio_evalvae_over_peer": ratio,
            "target_ratio": TARGET_RATIO,
            "metrics": metrics,
            "evalvae_minus_peer": agreement,
            "peer_seconds": peer.get("seconds"),
            **({"log_tail": log[-4000:]} if code else {}),
        }
        self.report.case(
            "c",
            result,
            [{"case": case, **fields, "batch": batch, "workers": workers, "seconds": wall,
              "images_per_s": result["images_per_s"], "ratio": ratio, "status": status,
              "note": "ratio: evalvae job wall / peer wall"}],
        )  # fmt: skip
        print(f"gpu_suite: (c) {case}: {status}, {wall:.1f} s, evalvae/peer {ratio}", flush=True)

    def process(self, cmd: list[str], log_path: Path) -> tuple[float, int, str]:
        """Run ``cmd`` (output to ``log_path``) until it exits or the budget ends (exit code 124); its wall
        seconds, exit code and output."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        with open(log_path, "w", encoding="utf-8") as log:
            proc = subprocess.Popen(
                cmd, env=self.env, cwd=self.work, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            try:
                code = proc.wait(timeout=max(1.0, self.budget.left()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # its loader workers too
                proc.wait()
                code = 124
        wall = time.perf_counter() - start
        text = log_path.read_text(encoding="utf-8", errors="replace")
        if code not in (0, 124):
            print(f"gpu_suite: {' '.join(cmd[:4])} ... exited {code}:\n{text[-3000:]}", flush=True)
        return wall, code, text


def _diff(a: float | None, b: float | None) -> float | None:
    return a - b if a is not None and b is not None else None


def head(args, scale: Scale, device, name: str) -> dict:
    import torch

    from evalvae.provenance import environment, software

    return {
        "environment": {
            **environment(device),
            "device_slug": slug(name),
            "torch": torch.__version__,
            "software": software(),
            "evalvae_source_sha256": source_sha256(),
        },
        "options": {**vars(args), "out": str(args.out), "scale": asdict(scale)},
        "peaks_tflops": {p: peak_tflops(name, p) for p in ("bf16", "tf32", "fp32")} if device.type == "cuda" else None,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=os.environ.get("OUT"), help="where the JSON and CSV go")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--tiny", action="store_true", help="a tiny VAE, 64/128 px, 12 images (the default on CPU)")
    p.add_argument("--images", type=int, default=None, help="the job's images (default 5000; 12 with --tiny)")
    p.add_argument("--budget", type=float, default=None, help="seconds for everything (default 420; 900 with --tiny)")
    p.add_argument("--parts", default="a,b,c,d", help="which parts, of a,b,c,d")
    p.add_argument("--precisions", default=None, help="of the jobs (b, c); default bf16,fp32,tf32 (fp32 with --tiny)")
    p.add_argument("--batch-size", default=None, help="auto or a count (default auto on a GPU, 4 on CPU)")
    p.add_argument(
        "--compile", action="store_true", help="compile=true for the runs, a compiled decoder for (a)'s loop"
    )
    args = p.parse_args()
    if args.out is None:
        p.error("--out (or $OUT) is required")
    parts = [x for x in "abcd" if x in args.parts.split(",")]
    start = time.perf_counter()
    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    if missing:
        print(f"gpu_suite: missing Python packages: {', '.join(missing)}", file=sys.stderr)
        return 2
    import torch

    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if cuda and not torch.cuda.is_available():
        print("gpu_suite: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2
    device = torch.device("cuda" if cuda else "cpu")
    scale = scale_for(args, cuda)
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    os.environ["HF_HUB_OFFLINE"] = "1"
    budget = Budget(scale.budget, start)
    report = Report(args.out, slug(name), head(args, scale, device, name), "".join(parts))
    with tempfile.TemporaryDirectory(prefix="evalvae-gpu-suite-") as tmp:
        suite = Suite(args, scale, device, name, Path(tmp), report, budget)
        suite.prepare()
        steps = [("a", suite.part_a), ("d", suite.part_d)]
        steps += [
            (part, lambda p=p, f=f: f(p))
            for p in scale.precisions
            for part, f in (("b", suite.part_b), ("c", suite.part_c))
        ]
        for part, step in steps:
            if part in parts:
                try:
                    step()
                except Exception as e:  # recorded; the other parts still run
                    report.fail(part, part, e)
    report.data["seconds"] = time.perf_counter() - start
    report.write()
    print(f"gpu_suite: {time.perf_counter() - start:.0f} s; wrote {report.json_path} and {report.csv_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
