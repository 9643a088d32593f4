"""How numbers and metric names read in the report (shared by HTML, markdown and plots)."""

from __future__ import annotations

import math

NAMES = {
    "psnr": "PSNR (dB)",
    "ssim": "SSIM",
    "ms_ssim": "MS-SSIM",
    "lpips": "LPIPS",
    "dists": "DISTS",
    "rfid": "rFID",
    "fid": "FID",
    "kid": "KID",
}
DECIMALS = {"psnr": 2, "ssim": 4, "ms_ssim": 4, "lpips": 4, "dists": 4, "rfid": 2, "fid": 2, "kid": 5}


def metric_name(metric: str) -> str:
    return NAMES.get(metric.lower(), metric)


def arrow(higher: bool | None) -> str:
    return "↑" if higher else ("↓" if higher is False else "")


def metric_title(metric: str, higher: bool | None) -> str:
    """``PSNR (dB) ↑``: the name with the arrow pointing to better values."""
    return f"{metric_name(metric)} {arrow(higher)}".strip()


def num(metric: str, value: float) -> str:
    """A value in the metric's customary precision (4 significant digits for unknown metrics)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    d = DECIMALS.get(metric.lower())
    return (f"{value:.{d}f}" if d is not None else f"{value:.4g}").replace("-", "−")


def num_diff(metric: str, value: float, spread: float) -> str:
    """A signed difference with enough decimals to show two significant digits of ``spread`` (a CI width)."""
    d = DECIMALS.get(metric.lower(), 4)
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
