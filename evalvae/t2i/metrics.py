"""What a text-to-image run measures per VAE: agreement with the reference decoder, CLIP score, FID/KID.

* Agreement: the run's per-image metrics (PSNR, SSIM, LPIPS from ``cfg.metrics``) of each VAE's
  decode against the reference decoder's decode of the same latent.
* ``clip_score`` of each decode against its prompt.
* ``fid``/``kid`` of each VAE's decodes against a reference image set (``t2i.reference``), with the
  reference statistics from the content-keyed cache shared with ``run`` and ``ref``. The decodes
  and the reference images are not pairs, so KID is the independent-samples estimator (as
  torch-fidelity and clean-fid compute it) whatever ``metrics.fid.kid_estimator`` says.
"""

from __future__ import annotations

import logging

import pandas as pd
import torch
from omegaconf import DictConfig

from evalvae import results
from evalvae.config import instantiate
from evalvae.data import make_loader
from evalvae.errors import ConfigError
from evalvae.metrics import Unavailable, build_metrics, result_columns, split_metrics, unavailable
from evalvae.metrics.base import recorded
from evalvae.metrics.features import MetricUnavailable
from evalvae.metrics.info import FD_DINOV2, FID, MetricInfo, metric_entry
from evalvae.metrics.refstats import References
from evalvae.results import summarize

log = logging.getLogger(__name__)

REFERENCE_NOTE = "reference decoder (the others are compared with it)"
SET_NAMES = {"rfid": "fid", "rfd_dinov2": "fd_dinov2"}  # the others (kid, cmmd) keep their names
UNPAIRED = "task=t2i: decodes of generated latents against a reference image set, two independent samples"


def set_info(info: MetricInfo) -> MetricInfo:
    """The info of a set-level result under its t2i name (:data:`SET_NAMES`: rFID's statistic is ``fid`` here)."""
    return {"rfid": FID, "rfd_dinov2": FD_DINOV2}.get(info.name, info)


def reject_region_metrics(metrics: DictConfig) -> None:
    """Raise :class:`ConfigError` for a region metric (text, faces): it detects regions on an original,
    which a text-to-image run does not have (its reference decoder's decode is no ground truth); checked
    before any metric is built."""
    from hydra.utils import get_class

    from evalvae.metrics.regions import RegionMetric

    for key, spec in metrics.items():
        if not (isinstance(spec, DictConfig) and "_target_" in spec):
            continue
        try:
            cls = get_class(str(spec._target_))
        except Exception:  # noqa: BLE001 - an unknown target is reported when the metric is built
            continue
        if isinstance(cls, type) and issubclass(cls, RegionMetric):
            raise ConfigError(
                f"metrics.{key}",
                str(spec._target_),
                hint="region metrics (text, faces) score regions found on originals, which task=t2i has none of: "
                "use them with task=recon, or drop them (metrics=default)",
            )


class T2IMetrics:
    """The metrics of one run, built from ``cfg.metrics`` and ``cfg.t2i``."""

    def __init__(self, cfg: DictConfig, cache_root, device: torch.device):
        self.quantize = bool(cfg.metrics.quantize)
        self.device = device
        reject_region_metrics(cfg.metrics)
        built = split_metrics(build_metrics(cfg.metrics))
        self.pair, self.sets, self.unavailable_sets = built.pair, built.sets, built.unavailable_sets
        self.reference_set, self.refs = None, None
        spec = cfg.t2i.get("reference")
        if self.sets and spec is None:
            reason = "no reference image set; add dataset@t2i.reference=coco t2i.reference.path=DIR (or folder)"
            log.warning("fid/kid unavailable: %s", reason)
            self.unavailable_sets += [Unavailable("fid", reason, m.infos, True) for m in self.sets]
            self.sets = []
        for m in self.sets:  # the decodes and the reference images are two independent samples, not pairs
            m.unpaired(UNPAIRED)
        if self.sets:
            self.reference_set = instantiate(spec)
            self.refs = References(cache_root, self.reference_set)
            for m in self.sets:
                m.extractor.to(device)
        self.clip = None
        if cfg.t2i.get("clip_score") is not None:
            try:
                self.clip = instantiate(cfg.t2i.clip_score).to(device)
            except MetricUnavailable as e:
                log.warning("clip_score unavailable: %s", e)
                self.clip = unavailable("clip_score", cfg.t2i.clip_score, str(e))

    @property
    def agreement_names(self) -> list[str]:
        """The per-image columns of the agreement with the reference decoder."""
        return [c for m in self.pair for c in result_columns(m)]

    @property
    def per_image_names(self) -> list[str]:
        return self.agreement_names + (["clip_score"] if self.clip is not None else [])

    def notes(self) -> dict[str, str]:
        """Per column, why its metric is unavailable, or a caveat such as non-standard weights."""
        metrics = [*self.pair, *([self.clip] if self.clip is not None else [])]
        return {c: m.note for m in metrics if m.note for c in result_columns(m)}

    def reference_statistics(self, batch_size: int, workers: int, device: torch.device) -> None:
        """Reference features for every set-level metric: from the cache, else computed once and cached."""
        self.refs.compute(self.sets, make_loader(self.reference_set, batch_size, workers, device))

    def set_rows(self, fakes) -> list[dict]:
        """FID/KID rows of one VAE from its accumulated states (a :class:`evalvae.metrics.base.SetStates`)."""
        rows = []
        for m in self.sets:
            rows += [{"metric": SET_NAMES.get(k, k), **v} for k, v in m.compute(self.refs.get(m), fakes[m]).items()]
        for m in self.unavailable_sets:
            rows += m.nan_rows(lambda k: SET_NAMES.get(k, k))
        return rows

    def protocol(self) -> dict:
        compared = "each VAE's decode vs the reference decoder's decode of the same latent"
        out = {}
        for m in self.pair:
            entry = {**m.protocol(), **recorded(m, self.device), "compared_with": compared}
            out.update({i.name: metric_entry(i, entry) for i in m.infos if i.summarised})
        if self.clip is not None:
            out.update({i.name: metric_entry(i, self.clip.protocol()) for i in self.clip.infos})
        for m in self.sets:
            protocol = m.protocol()
            for info in m.infos:
                proto = protocol[info.name]
                if info.name == "rfid":
                    proto = {**proto, "quantization": "8-bit reference images vs 8-bit decodes"}
                reference = {
                    "dataset": self.reference_set.describe(),
                    "statistics": self.refs.info.get(m.extractor.name),
                }
                out[SET_NAMES.get(info.name, info.name)] = metric_entry(
                    set_info(info), {**proto, **recorded(m, self.device), "reference": reference}
                )
        for m in self.unavailable_sets:
            out.update({SET_NAMES.get(i.name, i.name): metric_entry(set_info(i), m.protocol()) for i in m.infos})
        return out


def by_category(per_image: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """``summarize`` within each prompt category: columns vae, category, metric, mean, std, n."""
    parts = []
    for category, group in per_image.groupby("category", sort=True):
        parts.append(summarize(group, metrics).drop(columns="note").assign(category=category))
    columns = ["vae", "category", "metric", "mean", "std", "n"]
    return pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)


def console_table(summary: pd.DataFrame) -> str:
    """VAE x metric table of ``mean ± std``; the reference decoder's own agreement cells read ``(reference)``."""
    return results.console_table(summary, {REFERENCE_NOTE: "(reference)"}, show_n=False)
