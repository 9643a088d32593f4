"""The report's statistics: those of :mod:`evalvae.metrics.stats`, which ``compare`` uses too."""

from evalvae.metrics.stats import (  # noqa: F401
    ALPHA,
    CONFIDENCE,
    N_RESAMPLES,
    NAN_INTERVAL,
    SEED,
    Interval,
    Paired,
    bootstrap_ci,
    holm,
    paired,
    smallest_p,
    tied,
    wilcoxon_p,
)
