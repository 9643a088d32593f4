"""How numbers and metric names read in the report (shared by HTML, markdown and plots).

A metric is named by its :class:`~evalvae.metrics.info.MetricInfo` (a section's, as ``metrics.json``
records it: :meth:`Section.info <evalvae.report.sections.Section.info>`) or by its result name
alone, which reads as the registered metric of that name, else as itself with 4 significant digits.
"""

from __future__ import annotations

import math

from evalvae.metrics.info import MetricInfo, recorded_info


def info(metric: MetricInfo | str) -> MetricInfo:
    return metric if isinstance(metric, MetricInfo) else recorded_info(metric)


def metric_name(metric: MetricInfo | str) -> str:
    return info(metric).title


def arrow(higher: bool | None) -> str:
    return "↑" if higher else ("↓" if higher is False else "")


def metric_title(metric: MetricInfo | str) -> str:
    """``PSNR (dB) ↑``: the name with the arrow pointing to better values."""
    i = info(metric)
    return f"{i.title} {arrow(i.higher_is_better)}".strip()


def num(metric: MetricInfo | str, value: float) -> str:
    """A value with the metric's decimals (4 significant digits for a metric that states none)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    d = info(metric).decimals
    return (f"{value:.{d}f}" if d is not None else f"{value:.4g}").replace("-", "−")


def num_diff(metric: MetricInfo | str, value: float, spread: float) -> str:
    """A signed difference with enough decimals to show two significant digits of ``spread`` (a CI width)."""
    d = info(metric).decimals
    d = 4 if d is None else d
    if spread is not None and math.isfinite(spread) and spread > 0:
        d = min(8, max(d, 1 - math.floor(math.log10(spread))))
    if value is None or math.isnan(value):
        return "–"
    if math.isinf(value):
        return "+∞" if value > 0 else "−∞"
    return f"{value:+.{d}f}".replace("-", "−")


def p_value(p: float) -> str:
    if p is None or math.isnan(p):
        return "–"
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}" if p < 0.01 else f"{p:.3f}"


def percent(x: float) -> str:
    return "–" if x is None or math.isnan(x) else f"{100 * x:.0f}%"
