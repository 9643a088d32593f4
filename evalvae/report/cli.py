"""``python -m evalvae report RUN_DIR [RUN_DIR ...] [--out DIR]``.

Not a Hydra application: its inputs are finished run directories, whose own ``config.yaml``
holds every parameter of the runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from pathlib import Path

from evalvae.errors import EvalvaeError
from evalvae.io import check_creatable

log = logging.getLogger("evalvae")


def parser() -> argparse.ArgumentParser:
    what = "Compare the VAEs of one or more runs: report.html, report.md, plots/, grids/ and tables/."
    p = argparse.ArgumentParser(prog="evalvae report", description=what)
    inputs = "run directories, multirun folders, and latents, robustness or bench output folders"
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help=inputs)
    out = "output folder (default: RUN_DIR/report for one run, else outputs/report/<date_time>)"
    p.add_argument("--out", type=Path, default=None, help=out)
    images = "image ids to show in grids (default: the image of median score)"
    p.add_argument("--images", nargs="*", default=[], metavar="ID", help=images)
    for which in ("worst", "best"):
        counts = f"grids for the K {which} images of each VAE (default: as many as the runs saved, samples.{which}; 0 for none)"
        p.add_argument(f"--{which}", type=int, default=None, metavar="K", help=counts)
    p.add_argument(
        "--no-grids", action="store_true", help="skip the image grids (drawn from the runs' saved samples/ PNGs)"
    )
    return p


def default_out(run_dirs: list[str]) -> Path:
    if len(run_dirs) == 1:
        return Path(run_dirs[0]) / "report"
    return Path("outputs") / "report" / dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)  # plain lines, as evalvae run
    from evalvae.report import write_report

    out = args.out or default_out(args.run_dirs)
    try:
        check_creatable(out, "--out")
        a = args
        html = write_report(a.run_dirs, out, images=a.images, worst=a.worst, best=a.best, grids=not a.no_grids)
    except EvalvaeError as e:
        log.error("evalvae: %s", e)
        sys.exit(2)
    except OSError as e:  # a folder or file of the report that cannot be written
        log.error("evalvae: cannot write the report in %s: %s", out, e)
        sys.exit(2)
    print(html)
