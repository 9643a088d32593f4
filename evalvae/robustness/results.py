"""The files of a robustness run: ``robustness.csv`` (tidy), ``skipped.csv``, ``timings.csv`` and ``vaes.json``,
rewritten atomically after each VAE."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from evalvae.results import Records, write_frame

COLUMNS = ["vae", "check", "setting", "metric", "value", "n", "note"]


class RobustnessWriter(Records):
    """Collects rows per VAE; :meth:`discard` and :meth:`add_vae` serve :mod:`evalvae.jobs.failures`."""

    def __init__(self, out: Path):
        super().__init__(out)
        self.rows: list[dict] = []
        self.skipped: list[tuple[str, str]] = []  # (file, reason), each once

    def add_skipped(self, skipped) -> None:
        """Files a check left out, ``(file, reason)``; one the loader skipped at every pass is listed once."""
        seen = set(self.skipped)
        for entry in skipped:
            entry = (str(entry[0]), str(entry[1]))
            if entry not in seen:
                seen.add(entry)
                self.skipped.append(entry)

    def add_rows(self, rows: list[dict]) -> None:
        self.rows += rows

    def add_vae(self, info: dict) -> None:
        self.vaes = [v for v in self.vaes if v.get("vae") != info.get("vae")] + [info]

    def discard(self, name: str) -> int:
        """Drop VAE ``name``'s rows and timings; return how many rows there were."""
        n = sum(r["vae"] == name for r in self.rows)
        self.rows = [r for r in self.rows if r["vae"] != name]
        super().discard(name)
        return n

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=COLUMNS)

    def flush(self) -> pd.DataFrame:
        table = self.table()
        write_frame(self.out / "robustness.csv", table)
        write_frame(self.out / "skipped.csv", pd.DataFrame(self.skipped, columns=["file", "reason"]))
        super().flush()
        return table
