"""Tolerances of ``evalvae compare``: how far each (vae, metric) may move before it counts.

The defaults live in ``conf/compare/tolerances.yaml``; a user's file (YAML or JSON, the same keys)
is laid over them entry by entry: its ``default``, each ``metrics.<name>`` and each
``vaes.<vae>.<name>`` replaces the entry it names as a whole, and ``alpha`` / ``improvements``
replace the scalars. A quality metric no file names gets the tolerance of its metric info
(``metrics.json``'s ``info.tolerance``; for a result without one, the registered metric's of that
name, :mod:`evalvae.metrics.info`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from importlib.resources import files
from pathlib import Path

import yaml

from evalvae.errors import ConfigError, check_choice
from evalvae.metrics.info import MetricInfo, Tolerance, registered_info

KEYS = ("default", "metrics", "vaes", "alpha", "improvements")
FIELDS = ("abs", "rel")
IMPROVEMENTS = ("pass", "fail")


@dataclass(frozen=True)
class Tolerances:
    default: Tolerance = Tolerance()
    metrics: dict[str, Tolerance] = field(default_factory=dict)
    vaes: dict[str, dict[str, Tolerance]] = field(default_factory=dict)
    alpha: float | None = 0.05
    improvements: str = "pass"
    sources: tuple[str, ...] = ()
    named: frozenset[str] = frozenset()  # metric names a user's file sets (defaults excluded)

    def get(self, vae: str, metric: str, info: MetricInfo | None = None) -> Tolerance:
        """The tolerance of one (vae, metric), the first of: per VAE, per metric (a file's, or a shipped
        speed entry), the metric's ``info`` (as its results record it; without one, the registered
        metric's of that name), the default."""
        info = registered_info(metric) if info is None else info
        found = self.vaes.get(vae, {}).get(metric) or self.metrics.get(metric)
        return found or (info.tolerance if info is not None else None) or self.default

    def unmatched(self, pairs: set[tuple[str, str]]) -> list[str]:
        """Entries of a user's file that name no compared (vae, metric): likely typos."""
        metrics = {m for _, m in pairs}
        out = [f"metrics.{m}" for m in sorted(self.named) if m not in metrics]
        for vae, entries in sorted(self.vaes.items()):
            out += [f"vaes.{vae}.{m}" for m in sorted(entries) if (vae, m) not in pairs]
        return out


def _tolerance(where: str, spec) -> Tolerance:
    if not isinstance(spec, dict):
        raise ConfigError(where, spec, hint="a mapping such as {abs: 0.01} or {rel: 0.02}")
    for key, value in spec.items():
        check_choice(f"{where} key", key, FIELDS)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            raise ConfigError(f"{where}.{key}", value, hint="a number >= 0")
    return Tolerance(float(spec.get("abs", 0.0)), float(spec.get("rel", 0.0)))


def _mapping(where: str, value) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(where, value, hint="a mapping")
    return value


def parse_tolerances(data, source: str = "tolerances", base: Tolerances | None = None) -> Tolerances:
    """Validate ``data`` (the parsed file) and lay it over ``base`` (default: the shipped defaults)."""
    base = default_tolerances() if base is None else base
    data = _mapping(source, {} if data is None else data)
    for key in data:
        check_choice(f"{source} key", key, KEYS)
    out = replace(base, sources=(*base.sources, source))
    if "default" in data:
        out = replace(out, default=_tolerance(f"{source}: default", data["default"]))
    if "metrics" in data:
        entries = _mapping(f"{source}: metrics", data["metrics"])
        parsed = {m: _tolerance(f"{source}: metrics.{m}", s) for m, s in entries.items()}
        out = replace(out, metrics={**out.metrics, **parsed}, named=out.named | set(parsed))
    if "vaes" in data:
        vaes = {vae: dict(entries) for vae, entries in out.vaes.items()}
        for vae, entries in _mapping(f"{source}: vaes", data["vaes"]).items():
            for m, s in _mapping(f"{source}: vaes.{vae}", entries).items():
                vaes.setdefault(vae, {})[m] = _tolerance(f"{source}: vaes.{vae}.{m}", s)
        out = replace(out, vaes=vaes)
    if "alpha" in data:
        alpha = data["alpha"]
        if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 1):
            raise ConfigError(
                f"{source}: alpha", alpha, hint="a significance level in (0, 1), or null for tolerance alone"
            )
        out = replace(out, alpha=None if alpha is None else float(alpha))
    if "improvements" in data:
        out = replace(out, improvements=check_choice(f"{source}: improvements", data["improvements"], IMPROVEMENTS))
    return out


def _read(path: Path):
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ConfigError(
            "--tolerances", str(path), hint=f"not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {e}"
        ) from e


def default_tolerances() -> Tolerances:
    """The shipped defaults, ``conf/compare/tolerances.yaml``."""
    shipped = files("evalvae.conf").joinpath("compare", "tolerances.yaml")
    parsed = parse_tolerances(yaml.safe_load(shipped.read_text(encoding="utf-8")), "defaults", base=Tolerances())
    return replace(parsed, named=frozenset())


def load_tolerances(path: str | Path | None = None) -> Tolerances:
    """The defaults overlaid with the file at ``path``, if any."""
    if path is None:
        return default_tolerances()
    path = Path(path)
    if not path.is_file():
        raise ConfigError("--tolerances", str(path), hint="no such file")
    return parse_tolerances(_read(path), str(path))
