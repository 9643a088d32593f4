"""Never redoing work, measured as ratios of whole ``python -m evalvae run`` processes in one session.

    python benchmarks/scale.py [--images N] [--tiny] [--only dedup,rerun,add,rss,overhead] [--out FILE]

* ``dedup``: three random-init SD-config AutoencoderKLs (benchmarks/sd_vae_random.py) with one shared
  encoder and different decoders, at 256² on the first ``--images`` Kodak photos (builtin without assets): one run of the three against three
  separate runs (each with a cache of its own). Target <= 0.70.
* ``rerun``: the one run again with the same command (a new run directory, same cache) against its
  first time. Target <= 0.05.
* ``add``: a run of [a, b] where a's run is cached, against a fresh run of b. Target <= 0.60.
* ``rss``: peak RSS of a TAEF2 run at 256² on 1,000 images against 100 (the builtin and Kodak
  photos repeated as distinct files). Target <= 1.10. Needs $EVALVAE_TEST_ASSETS.
* ``overhead``: ``evalvae run`` of TAEF2 at 256² on COCO-mini with the report on, against a bare
  encode+decode loop in a process of its own (read, resize and crop the JPEGs, encode, decode).
  Target <= 1.05. Needs $EVALVAE_TEST_ASSETS.

Wall times include process start. Peak RSS is the child's ``ru_maxrss`` (``os.wait4``).
``--tiny`` swaps the SD-size models for 2-block ones (checks the script in seconds; the ratios then
mean little). Prints a table and writes JSON to ``--out`` (default benchmarks/results/scale.json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"dedup": 0.70, "rerun": 0.05, "add": 0.60, "rss": 1.10, "overhead": 1.05}
BARE = r"""
import sys, time, torch
from pathlib import Path
from evalvae.data import folder
from evalvae.metrics.base import from_uint8
from evalvae.vae import load_vae
images, weights, res, bs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ds = folder(images, resolution=res)
vae = load_vae("taef2", {"_target_": "evalvae.vae.tiny.TinyAdapter", "source": weights, "weights_prefix": "taef2",
                         "latent_space": "flux2", "sha256": None}, device="cpu")
vae.module.to(memory_format=torch.channels_last)
for i in range(0, len(ds), bs):
    x = from_uint8(torch.stack([ds[j].image for j in range(i, min(i + bs, len(ds)))])).contiguous(memory_format=torch.channels_last)
    vae.decode(vae.encode(x).contiguous(memory_format=torch.channels_last))
"""


def run(args: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of ``python -m evalvae`` ``args``."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TQDM_DISABLE="1", PYTHONPATH=str(REPO))
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    stderr = proc.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(args)}\n{stderr[-3000:]}")
    return wall, usage.ru_maxrss / 1024


BREAKDOWN: dict[str, dict] = {}  # run name -> where its time went (timings.csv, the samples' log line)
STAGE_COLUMNS = ("load_s", "encode_s", "decode_s", "metrics_s", "total_s", "images_encoded", "batches_cached")


def evalvae_run(tmp: Path, name: str, cache: Path, *overrides: str) -> tuple[float, float]:
    wall, rss = run(
        ["-m", "evalvae", "run", f"hydra.run.dir={tmp / name}", f"cache_dir={cache}", "device=cpu", *overrides], tmp
    )
    BREAKDOWN[name] = breakdown(tmp / name, wall)
    return wall, rss


def breakdown(out: Path, wall: float) -> dict:
    import pandas as pd

    t = pd.read_csv(out / "timings.csv").set_index("vae")
    found = {"wall_s": wall, "vaes": {v: {c: float(t.loc[v, c]) for c in STAGE_COLUMNS if c in t} for v in t.index}}
    found["outside_vaes_s"] = wall - float(t["total_s"].sum())  # start, set-up, samples at the end, writing
    log = out / "evalvae-run.log"
    lines = [x for x in log.read_text().splitlines() if "] samples: " in x] if log.is_file() else []
    if lines:
        found["samples"] = lines[-1].split("] samples: ", 1)[1]
    return found


def seconds(out: Path, column: str) -> float:
    """A stage's seconds in a run's ``timings.csv`` (summed over its VAEs)."""
    import pandas as pd

    return float(pd.read_csv(out / "timings.csv")[column].sum())


def kl(name: str, folder: Path) -> list[str]:
    return [
        f"+vae.{name}._target_=evalvae.vae.kl.KLAdapter",
        f"+vae.{name}.source={folder}",
        f"+vae.{name}.latent_space=sd",
    ]


def shared_encoder_vaes(root: Path, tiny: bool) -> dict[str, Path]:
    """a, b, c: one encoder (a's), three decoders."""
    from diffusers import AutoencoderKL

    sys.path.insert(0, str(REPO / "benchmarks"))
    from sd_vae_random import write

    base = AutoencoderKL.from_pretrained(write(root / "a", tiny=tiny, seed=0))
    out = {"a": root / "a"}
    for name, seed in (("b", 1), ("c", 2)):
        other = AutoencoderKL.from_pretrained(write(root / f"{name}-own", tiny=tiny, seed=seed))
        other.encoder.load_state_dict(base.encoder.state_dict())
        other.quant_conv.load_state_dict(base.quant_conv.state_dict())
        other.save_pretrained(root / name)
        out[name] = root / name
    return out


def repeated_images(assets: Path, dest: Path, n: int) -> Path:
    sources = sorted((assets / "images" / "kodak").glob("*.png"))
    from PIL import Image
    from skimage import data

    builtin = dest.parent / "builtin"
    builtin.mkdir(parents=True, exist_ok=True)
    for name in ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field"):
        Image.fromarray(getattr(data, name)()[..., :3]).save(builtin / f"{name}.png")
    sources += sorted(builtin.glob("*.png"))
    dest.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        src = sources[i % len(sources)]
        os.link(src, dest / f"{i:05d}-{src.name}")
    return dest


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--images",
        type=int,
        default=12,
        help="Kodak photos in the SD-size runs (builtin ones, at most 9, without assets)",
    )
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--only", default="dedup,rerun,add,rss,overhead")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "scale.json")
    args = p.parse_args()
    only = set(args.only.split(","))
    assets = Path(os.environ["EVALVAE_TEST_ASSETS"]) if os.environ.get("EVALVAE_TEST_ASSETS") else None
    tmp = Path(tempfile.mkdtemp(prefix="evalvae-scale-"))
    results = Results(args.out, {"tiny": args.tiny, "images": args.images})
    photos = (
        ["dataset=builtin"] if assets is None else ["dataset=folder", f"dataset.path={assets / 'images' / 'kodak'}"]
    )
    common = [
        *photos,
        "dataset.resolution=256",
        f"dataset.limit={args.images}",
        "metrics=default",
        "report=false",
        "batch_size=4",
    ]
    try:
        if only & {"dedup", "rerun", "add"}:
            vaes = shared_encoder_vaes(tmp / "vaes", args.tiny)
        if only & {"dedup", "rerun"}:
            separate = sum(
                evalvae_run(tmp, f"sep-{k}", tmp / f"cache-sep-{k}", *common, *kl(k, v))[0] for k, v in vaes.items()
            )
            all3 = [x for k, v in vaes.items() for x in kl(k, v)]
            shared, _ = evalvae_run(tmp, "shared", tmp / "cache-shared", *common, *all3)
            enc = {k: seconds(tmp / f"sep-{k}", "encode_s") for k in vaes}
            results["dedup"] = {
                "value": shared / separate,
                "shared_s": shared,
                "separate_s": separate,
                "encode_s": enc,
                # what leaving out b's and c's encodes alone would give: the part of the saving the model's
                # encode/decode split allows, before the fixed costs (start, loading, the originals' features)
                "encodes_only": (separate - enc["b"] - enc["c"]) / separate,
            }
            again, _ = evalvae_run(tmp, "again", tmp / "cache-shared", *common, *all3)
            results["rerun"] = {"value": again / shared, "rerun_s": again, "first_s": shared}
        if "add" in only:
            evalvae_run(tmp, "a-only", tmp / "cache-add", *common, *kl("a", vaes["a"]))
            added, _ = evalvae_run(
                tmp, "a-plus-b", tmp / "cache-add", *common, *kl("a", vaes["a"]), *kl("b", vaes["b"])
            )
            fresh, _ = evalvae_run(tmp, "b-fresh", tmp / "cache-b-fresh", *common, *kl("b", vaes["b"]))
            enc = seconds(tmp / "b-fresh", "encode_s")
            results["add"] = {
                "value": added / fresh,
                "added_s": added,
                "fresh_s": fresh,
                "encode_s": enc,
                "encodes_only": (fresh - enc) / fresh,  # what not encoding alone would give
            }
        if "rss" in only and assets:
            taef2 = [
                "+vae=taef2",
                f"vae.taef2.source={assets / 'weights' / 'taef2'}",
                "dataset=folder",
                "dataset.resolution=256",
                "report=false",
                "batch_size=8",
            ]
            peaks = {}
            for n in (100, 1000):
                folder = repeated_images(assets, tmp / f"img-{n}", n)
                peaks[n] = evalvae_run(tmp, f"rss-{n}", tmp / f"cache-rss-{n}", *taef2, f"dataset.path={folder}")[1]
            results["rss"] = {
                "value": peaks[1000] / peaks[100],
                "peak_mib_100": peaks[100],
                "peak_mib_1000": peaks[1000],
            }
        if "overhead" in only and assets:
            coco, weights = assets / "images" / "coco-val2017-mini", assets / "weights" / "taef2"
            bare, _ = run(["-c", BARE, str(coco), str(weights), "256", "8"], tmp)
            full, _ = evalvae_run(
                tmp,
                "overhead",
                tmp / "cache-overhead",
                "+vae=taef2",
                f"vae.taef2.source={weights}",
                "dataset=folder",
                f"dataset.path={coco}",
                "dataset.resolution=256",
                "batch_size=8",
                "report=true",
            )
            results["overhead"] = {"value": full / bare, "run_s": full, "bare_s": bare}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{'ratio':<10} {'value':>7} {'target':>7}  detail")
    for k, r in results.items():
        detail = ", ".join(f"{a}={b:.3g}" for a, b in r.items() if a != "value" and isinstance(b, float))
        print(f"{k:<10} {r['value']:>7.3f} {TARGETS[k]:>7.2f}  {detail}")


class Results(dict):
    """Each ratio is written to ``path`` as soon as it is measured, so a later failure loses nothing."""

    def __init__(self, path: Path, meta: dict):
        super().__init__()
        self.path, self.meta = path, meta

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        print(f"{key}: {value}", flush=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        load = os.getloadavg()
        body = {**self.meta, "load_average": load, "results": dict(self), "runs": BREAKDOWN}
        self.path.write_text(json.dumps(body, indent=2) + "\n")


if __name__ == "__main__":
    main()
