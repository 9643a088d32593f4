"""Fixed cost of `evalvae run`: process start to the first batch, and the offline-error path (target: 3 s each).

    python benchmarks/startup.py [--repeats 5] [--weights $EVALVAE_TEST_ASSETS/weights/taef2] [--resolution 64]
        [--threads 1] [--no-diffusers]

Every number is a fresh `python -m evalvae ...` process of this checkout (PYTHONPATH is the
repository, the working directory, cache_dir and Hugging Face cache are new empty folders), timed
by this script from just before it starts the process; the medians over --repeats processes are
printed and written to benchmarks/results/startup.json. Repeats go round the scenarios, so drift in
machine load touches them alike. CPU seconds (user + system of the process and its loader workers)
are reported beside wall seconds: on a shared machine they move less. The processes run with
OMP_NUM_THREADS=1 (--threads; 0 keeps torch's default): the fixed cost is single-threaded, and
on a busy machine every small torch operation of several OpenMP threads waits for the ones that
other processes hold off their cores (there, loading TAEF2 and its first 64² batch took seconds
with 2 threads and a tenth of that with 1), which would measure the machine's load, not evalvae.

Rows:
- run, first batch: `run +vae=taef2 vae.taef2.source=WEIGHTS batch_size=1 dataset.resolution=64
  report=false` on the builtin dataset (9 images), metrics default (PSNR, SSIM). evalvae writes
  every finished batch of a run as one result chunk, atomically, into <cache_dir>/results
  (evalvae.store), so, with no hook in evalvae, the first batch is done at the modification
  time of the first chunk file there. One small image per batch keeps that batch's own work
  (which CPU contention inflates most) small next to the fixed cost: the time between the first
  and the second chunk (one batch) is shown beside it. "ready" is the time of the run's first log line in
  <run dir>/evalvae-run.log (millisecond timestamps; "dataset builtin: 9 images ...", logged once
  the config is validated and the task, dataset and metrics are built, just before the VAE loads).
  Without --weights (and $EVALVAE_TEST_ASSETS) this row is skipped.
- run, first batch, diffusers AutoencoderKL: the same with a tiny AutoencoderKL folder (written by
  tests/helpers.save_tiny_kl) as ft-mse's source: what a diffusers VAE adds (importing diffusers).
  A reference point, not a target; --no-diffusers skips it.
- offline error: `run +vae=ft-mse` with HF_HUB_OFFLINE=1 and an empty Hugging Face cache and
  cache_dir, until the process exits with status 2 and its one "evalvae:" error line.
- --help, a config error (`run batch_size=0`, exit 2) and `python -c "import torch"`: reference points.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evalvae.io import atomic_write_text  # noqa: E402

TARGET_S = 3.0
RESULTS = REPO / "benchmarks" / "results" / "startup.json"


@dataclass
class Scenario:
    name: str
    args: list[str]  # after ``python``
    expect_rc: int
    target: bool = False  # a row with the 3 s target
    first_batch: bool = False  # time the first result chunk and the first log line
    error_text: str | None = None  # the one "evalvae:" line must contain this
    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, key: str, value: float | None) -> None:
        if value is not None:
            self.samples.setdefault(key, []).append(value)

    def median(self, key: str) -> float | None:
        values = self.samples.get(key)
        return statistics.median(values) if values else None

    @property
    def headline(self) -> str:
        return "first_batch_s" if self.first_batch else "exit_s"


def log_start(log: Path) -> float | None:
    """The timestamp of the first line of a Hydra job log ``[YYYY-mm-dd HH:MM:SS,mmm][...]``."""
    if not log.is_file():
        return None
    for line in log.read_text().splitlines():
        if line.startswith("["):
            return datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


def chunk_times(cache: Path) -> list[float]:
    """Modification times of the result chunks under ``cache``, earliest first."""
    return sorted(p.stat().st_mtime for p in (cache / "results").rglob("*.safetensors"))


def measure(s: Scenario, workdir: Path, threads: int) -> None:
    """One fresh process of ``s``, in empty folders under ``workdir``."""
    cwd, cache, hf = workdir / "cwd", workdir / "cache", workdir / "hf"
    for d in (cwd, cache, hf):
        d.mkdir(parents=True)
    run_dir = workdir / "run"
    args = [a.format(run_dir=run_dir, cache=cache) for a in s.args]
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(hf),
        "HF_HUB_CACHE": str(hf / "hub"),
        "EVALVAE_CACHE": str(cache),
        "TQDM_DISABLE": "1",
    }
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.time()
    r = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    end = time.time()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != s.expect_rc:
        raise SystemExit(f"{s.name}: exit status {r.returncode}, expected {s.expect_rc}\n{r.stderr[-3000:]}")
    if s.error_text is not None:
        errors = [line for line in r.stderr.splitlines() if line.startswith("evalvae:")]
        if len(errors) != 1 or s.error_text not in errors[0]:
            raise SystemExit(f"{s.name}: expected one 'evalvae:' line with {s.error_text!r}\n{r.stderr[-3000:]}")
    s.add("exit_s", end - start)
    s.add("cpu_s", (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    if s.first_batch:
        chunks = chunk_times(cache)
        if len(chunks) < 2:
            raise SystemExit(f"{s.name}: found {len(chunks)} result chunk(s) under {cache}/results, expected 9")
        ready = log_start(run_dir / "evalvae-run.log")
        s.add("first_batch_s", chunks[0] - start)
        s.add("batch_s", chunks[1] - chunks[0])
        s.add("ready_s", None if ready is None else ready - start)


def scenarios(weights: Path | None, tiny_kl: Path | None, resolution: int) -> list[Scenario]:
    run = ["-m", "evalvae", "run", "batch_size=1", f"dataset.resolution={resolution}", "report=false", "progress=false"]
    where = ["hydra.run.dir={run_dir}", "cache_dir={cache}"]
    out = []
    if weights is not None:
        vae = ["+vae=taef2", f"vae.taef2.source={weights}"]
        out.append(Scenario("run: first batch (taef2)", [*run, *vae, *where], 0, target=True, first_batch=True))
    out.append(
        Scenario(
            "offline error (+vae=ft-mse)",
            ["-m", "evalvae", "run", "+vae=ft-mse"],
            2,
            target=True,
            error_text="could not load hub id 'stabilityai/sd-vae-ft-mse'",
        )
    )
    if tiny_kl is not None:
        vae = ["+vae=ft-mse", f"vae.ft-mse.source={tiny_kl}"]
        out.append(Scenario("run: first batch (diffusers AutoencoderKL)", [*run, *vae, *where], 0, first_batch=True))
    out += [
        Scenario("evalvae --help", ["-m", "evalvae", "--help"], 0),
        Scenario("config error (batch_size=0)", ["-m", "evalvae", "run", "batch_size=0"], 2, error_text="batch_size=0"),
        Scenario('python -c "import torch"', ["-c", "import torch"], 0),
    ]
    return out


def write_tiny_kl(folder: Path) -> Path:
    code = (
        "import sys; from pathlib import Path; from tests.helpers import save_tiny_kl; save_tiny_kl(Path(sys.argv[1]))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", code, str(folder)], cwd=REPO, env=env, check=True, timeout=600)
    return folder


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def table(rows: list[Scenario], repeats: int, threads: int) -> str:
    omp = f"OMP_NUM_THREADS={threads}" if threads else "torch's default threads"
    lines = [
        f"medians of {repeats} fresh processes ({omp}); seconds from process start",
        f"{'':46} {'time':>6} {'min':>6} {'max':>6} {'cpu':>6}  target",
    ]
    for s in rows:
        values = s.samples[s.headline]
        verdict = ""
        if s.target:
            verdict = f"<= {TARGET_S:g} s: " + ("met" if s.median(s.headline) <= TARGET_S else "NOT met")
        lines.append(
            f"{s.name:46} {fmt(s.median(s.headline)):>6} {fmt(min(values)):>6} {fmt(max(values)):>6} "
            f"{fmt(s.median('cpu_s')):>6}  {verdict}"
        )
        if s.first_batch:
            lines.append(f"{'  ready (first log line, before the VAE loads)':46} {fmt(s.median('ready_s')):>6}")
            lines.append(f"{'  one batch (first to second chunk)':46} {fmt(s.median('batch_s')):>6}")
            lines.append(f"{'  exit (9 images)':46} {fmt(s.median('exit_s')):>6}")
    return "\n".join(lines)


def git_commit() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "evalvae"], cwd=REPO, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("+uncommitted" if dirty.stdout.strip() else "")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    assets = os.environ.get("EVALVAE_TEST_ASSETS")
    default_weights = Path(assets) / "weights" / "taef2" if assets else None
    p.add_argument("--weights", type=Path, default=default_weights, help="folder with taef2_encoder/decoder.pth")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--resolution", type=int, default=64, help="of the first-batch runs' images (multiple of 8)")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the processes; 0: torch's default")
    p.add_argument("--no-diffusers", action="store_true", help="skip the diffusers AutoencoderKL reference row")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    if args.repeats < 1:
        p.error(f"--repeats must be a positive integer, got {args.repeats}")
    if args.threads < 0:
        p.error(f"--threads must be 0 (torch's default) or a positive integer, got {args.threads}")
    weights = args.weights if args.weights is not None and args.weights.is_dir() else None
    if weights is None:
        print(f"no TAEF2 weights at {args.weights}: the first-batch row is skipped", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="evalvae-startup-") as tmp:
        tmp = Path(tmp)
        tiny_kl = None if args.no_diffusers else write_tiny_kl(tmp / "tiny-kl")
        rows = scenarios(weights, tiny_kl, args.resolution)
        for i in range(args.repeats):
            for j, s in enumerate(rows):
                measure(s, tmp / f"{i}-{j}", args.threads)
            print(f"repeat {i + 1}/{args.repeats} done", file=sys.stderr)

    print(table(rows, args.repeats, args.threads))
    result = {
        "benchmark": "startup",
        "target_s": TARGET_S,
        "repeats": args.repeats,
        "resolution": args.resolution,
        "omp_num_threads": args.threads or None,
        "commit": git_commit(),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
        },
        "rows": [
            {
                "name": s.name,
                "command": ["python", *s.args],
                "target": s.target,
                "median_s": s.median(s.headline),
                "meets_target": (s.median(s.headline) <= TARGET_S) if s.target else None,
                **{f"median_{k}": s.median(k) for k in sorted(s.samples)},
                "samples": s.samples,
            }
            for s in rows
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
