"""Non-finite findings of ``evalvae bench``, which make a job evaluate a VAE in fp32, with a warning.

The bench records, for each VAE's weights and each reduced precision, the ops and resolutions
where an output held NaN or inf (the SDXL VAE in fp16 is the known case). Before a job
evaluates a VAE in fp16 or bf16 its loading policy (:func:`evalvae.jobs.policy.load_for_run`)
looks the weights up; a finding makes it evaluate the VAE in fp32 instead, log a warning, and
record both dtypes in ``vaes.json`` (``dtype`` is what ran, ``dtype_requested`` what was asked)
and the fp32 in ``timings.csv``.

Findings live in ``<cache_dir>/bench/nonfinite.json``, keyed by a hash of where the weights came
from (source, revision, file hashes) and the dtype, so the same weights under another name match.
A later bench of the same weights and dtype that runs finite at every op and resolution of a
finding clears it.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

from evalvae.io import atomic_write_text, cache_dir
from evalvae.vae import VAEAdapter

log = logging.getLogger(__name__)


def registry_path(configured_cache: str | None) -> Path:
    """The one place the findings file lives."""
    return cache_dir(configured_cache) / "bench" / "nonfinite.json"


def weights_identity(vae: VAEAdapter) -> str:
    """A short hash of the adapter class and where its weights came from (not of its dtype or device)."""
    w = vae.weights
    key = {
        "adapter": f"{type(vae).__module__}.{type(vae).__qualname__}",
        "kind": w.kind,
        "location": w.location,
        "files": dict(sorted(w.files.items())),
    }
    if w.kind == "module":  # weights built in memory have no location: tell them apart by name
        key["name"] = vae.name
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def load_findings(configured_cache: str | None) -> dict:
    path = registry_path(configured_cache)
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        log.warning("ignoring unreadable %s (%s)", path, e)
        return {}


def update_findings(
    configured_cache: str | None, identities: Mapping[str, dict], rows: Iterable[dict], bench_dir: str
) -> dict:
    """Fold one bench's rows into the findings file; return the findings.

    ``identities`` maps each benchmarked VAE name to ``{"identity": ..., "source": ...}``.
    Only reduced-precision rows with status ``ok`` count.
    """
    findings = load_findings(configured_cache)
    seen: dict[str, dict] = {}
    for row in rows:
        if row["status"] != "ok" or row["dtype"] == "fp32" or row["vae"] not in identities:
            continue
        ident = identities[row["vae"]]
        entry = seen.setdefault(
            f"{ident['identity']}:{row['dtype']}",
            {"vae": row["vae"], "source": ident["source"], "dtype": row["dtype"], "finite": set(), "nonfinite": []},
        )
        where = {"op": row["op"], "resolution": int(row["resolution"]), "mode": row["mode"]}
        if row["nonfinite"]:
            entry["nonfinite"].append(where)
        else:
            entry["finite"].add((row["op"], int(row["resolution"])))
    today = datetime.date.today().isoformat()
    for key, entry in seen.items():
        if entry["nonfinite"]:
            findings[key] = {
                "vae": entry["vae"],
                "source": entry["source"],
                "dtype": entry["dtype"],
                "nonfinite": entry["nonfinite"],
                "date": today,
                "bench_dir": bench_dir,
            }
        elif key in findings and all((w["op"], w["resolution"]) in entry["finite"] for w in findings[key]["nonfinite"]):
            log.info(
                "VAE '%s' in %s ran finite where it did not before; cleared that finding", entry["vae"], entry["dtype"]
            )
            del findings[key]
    if seen:
        atomic_write_text(registry_path(configured_cache), json.dumps(findings, indent=2) + "\n")
    return findings


def finding_for(vae: VAEAdapter, configured_cache: str | None) -> dict | None:
    """The bench's non-finite finding for this VAE's weights in its current dtype, if any."""
    if vae.dtype_name == "fp32":
        return None
    return load_findings(configured_cache).get(f"{weights_identity(vae)}:{vae.dtype_name}")
