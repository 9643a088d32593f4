"""``files_unmatched.csv``: the images a VAE left unscored and its inputs that matched no image, with reasons.

The reconstruction loop records an image a VAE's ``prepare_group`` leaves out, or one too small for
its downsampling factor (problem ``too small``), as a skipped file with the reason
``"vae '<name>': <problem>: <details>"`` (:func:`evalvae.recon.loop.reconstruct`); those
entries travel with the result chunks and between ``torchrun`` processes like any skipped file. Here
they are gathered per VAE, with the VAE's ``unused_inputs`` (for :mod:`evalvae.vae.files`, the extra
files), into one table: ``vae, file, problem, reason``.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pandas as pd

from evalvae.results import write_frame
from evalvae.vae import VAEAdapter

log = logging.getLogger(__name__)
FILE = "files_unmatched.csv"
COLUMNS = ["vae", "file", "problem", "reason"]


class UnmatchedLog:
    """The run's ``files_unmatched.csv``, rewritten whenever a VAE adds rows to it."""

    def __init__(self, out: Path):
        self.path = Path(out) / FILE
        self.rows: list[dict] = []

    def add(self, name: str, vae, batches: list[tuple[int, list[dict], list]], dataset) -> None:
        """VAE ``name``'s entries: its left-out images among ``batches``' skipped files, and ``vae``'s unused inputs."""
        prefix = f"vae '{name}': "
        left = [(f, r[len(prefix) :]) for _, _, skipped in batches for f, r in skipped if r.startswith(prefix)]
        records = getattr(dataset, "records", None)
        extra = vae.unused_inputs([r.id for r in records]) if isinstance(vae, VAEAdapter) and records else []
        rows = [{"vae": name, "file": f, "problem": r.split(":", 1)[0], "reason": r} for f, r in [*left, *extra]]
        if not rows:
            return
        self.rows += rows
        write_frame(self.path, pd.DataFrame(self.rows, columns=COLUMNS))
        scored = sum(len(r) for _, r, _ in batches)
        counts = Counter(r["problem"] for r in rows if r["problem"] != "extra")
        n_extra = len(rows) - sum(counts.values())
        log.warning(
            "VAE '%s': %d of %d image(s) scored (not scored: %s); %d extra file(s); listed in %s",
            name,
            scored,
            scored + len(left),
            ", ".join(f"{n} {problem}" for problem, n in sorted(counts.items())) or "none",
            n_extra,
            self.path,
        )
