"""``python -m evalvae cache ls|prune``: what the cache directory holds, and cleaning it.

The cache (``cache_dir``, else ``$EVALVAE_CACHE``, else ``~/.cache/evalvae``) holds, by folder:

========== ==================================================================== ==============
kind       what                                                                 rebuilt by
========== ==================================================================== ==============
latents    each encoder's latents per batch (run) and generated latents (t2i)   encoding again
results    each VAE's finished batches: per-image rows, set-level features,     evaluating again
           what vaes.json says of each VAE
refstats   the originals' rFID/KID statistics per dataset and extractor         ``evalvae ref``
weights    downloaded VAE weights                                               downloading
hashes     the sha256 of local weight files, by path and stat                   hashing again
========== ==================================================================== ==============

``prune`` removes whole kinds (by default the two that grow with every run: latents and results)
or only their files not used for ``--older-than`` days, and always the temporary files a killed
write leaves behind. ``weights`` is pruned only when named.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from evalvae.io import cache_dir

KINDS = ("latents", "results", "refstats", "weights", "hashes")
DEFAULT_PRUNE = ("latents", "results")


@dataclass
class Usage:
    kind: str
    files: int = 0
    bytes: int = 0
    newest: float | None = None


def _files(root: Path):
    for dirpath, _, names in os.walk(root):
        for name in names:
            yield Path(dirpath) / name


def is_leftover(path: Path) -> bool:
    """A temporary file of an atomic write that never finished (:func:`evalvae.io.atomic_path`)."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


def usage(root: Path) -> list[Usage]:
    out = []
    for kind in KINDS:
        u = Usage(kind)
        for f in _files(root / kind):
            st = f.stat()
            u.files, u.bytes = u.files + 1, u.bytes + st.st_size
            u.newest = max(u.newest or 0.0, st.st_mtime)
        out.append(u)
    return out


def size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def ls(root: Path) -> str:
    rows = usage(root)
    lines = [f"cache {root}", f"{'kind':<10} {'files':>8} {'size':>11}  last written"]
    for u in rows:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(u.newest)) if u.newest else "-"
        lines.append(f"{u.kind:<10} {u.files:>8} {size(u.bytes):>11}  {when}")
    total = sum(u.bytes for u in rows)
    lines.append(f"{'total':<10} {sum(u.files for u in rows):>8} {size(total):>11}")
    return "\n".join(lines)


def prune(
    root: Path, kinds=DEFAULT_PRUNE, older_than_days: float | None = None, dry_run: bool = False
) -> tuple[int, int]:
    """Delete the files of ``kinds`` (all, or those last written more than ``older_than_days`` ago) and
    every leftover temporary file; return (files, bytes) removed (or that would be, with ``dry_run``)."""
    cutoff = None if older_than_days is None else time.time() - older_than_days * 86400
    n = freed = 0
    for kind in KINDS:
        for f in list(_files(root / kind)):
            st = f.stat()
            if is_leftover(f) or (kind in kinds and (cutoff is None or st.st_mtime < cutoff)):
                n, freed = n + 1, freed + st.st_size
                if not dry_run:
                    f.unlink(missing_ok=True)
        if not dry_run and (root / kind).is_dir():
            for dirpath, _, _ in sorted(os.walk(root / kind), key=lambda w: -len(w[0])):
                if Path(dirpath) != root / kind and not any(Path(dirpath).iterdir()):
                    Path(dirpath).rmdir()
    return n, freed


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evalvae cache", description="Show or clean evalvae's cache directory.")
    p.add_argument("--cache-dir", type=Path, default=None, help="default: $EVALVAE_CACHE, else ~/.cache/evalvae")
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("ls", help="files and size of each kind")
    pr = sub.add_parser("prune", help=f"delete cached files (default kinds: {', '.join(DEFAULT_PRUNE)})")
    pr.add_argument("kinds", nargs="*", metavar="KIND", help=f"of {', '.join(KINDS)}")
    pr.add_argument("--all", action="store_true", help="every kind, weights included")
    pr.add_argument("--older-than", type=float, metavar="DAYS", help="only files last written more than DAYS ago")
    pr.add_argument("--dry-run", action="store_true", help="say what would go, delete nothing")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    root = cache_dir(args.cache_dir)
    if args.action == "ls":
        print(ls(root))
        return
    kinds = KINDS if args.all else tuple(args.kinds) or DEFAULT_PRUNE
    n, freed = prune(root, kinds, args.older_than, args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {n} file(s), {size(freed)}, of {', '.join(kinds)} in {root}")
