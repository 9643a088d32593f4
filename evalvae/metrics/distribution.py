"""rFID and KID of reconstructions against the originals, from one pass of one feature extractor."""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from evalvae.metrics import info as shipped
from evalvae.metrics.base import SetMetric
from evalvae.metrics.features import FeatureExtractor, build_extractor
from evalvae.metrics.frechet import FeatureStats, frechet_distance, kid

log = logging.getLogger(__name__)


class FIDKID(SetMetric):
    """Set-level metrics ``rfid`` (lower is better) and, unless ``kid=false``, ``kid``.

    rFID is the Fréchet distance between Gaussian fits (float64 mean and unbiased covariance) of
    the originals' and the reconstructions' features. KID is the unbiased polynomial-kernel MMD^2
    over ``kid_subsets`` subsets of ``kid_subset_size`` images. Both see 8-bit images.
    """

    set_level = True
    infos = (shipped.RFID, shipped.KID)
    version = 1  # of compute(): the Fréchet distance and KID from the features

    def __init__(
        self,
        extractor="inception",
        weights: str | None = None,
        resize: str = "clean",
        kid: bool = True,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        seed: int = 0,
    ):
        self.extractor: FeatureExtractor = build_extractor(extractor, weights, resize)
        self.with_kid, self.kid_subsets, self.kid_subset_size, self.seed = bool(kid), kid_subsets, kid_subset_size, seed

    @staticmethod
    def result_names(kid: bool = True, **_) -> list[str]:
        """The rows a spec with these arguments produces (known before the extractor loads)."""
        return ["rfid", "kid"] if kid else ["rfid"]

    @property
    def names(self) -> list[str]:
        return self.result_names(self.with_kid)

    @property
    def keeps_features(self) -> bool:
        """Whether the statistics keep the features themselves (KID's subsets need them; rFID does not)."""
        return self.with_kid

    def new_state(self) -> FeatureStats:
        return FeatureStats(self.extractor.dim, keep_features=self.keeps_features)

    new_stats = new_state  # the name the statistics had before the set-level contract

    def features(self, images_u8: torch.Tensor) -> np.ndarray:
        return self.extractor(images_u8)

    def add(self, state: FeatureStats, features: np.ndarray) -> None:
        state.update(features)

    def reference_identity(self) -> dict:
        return self.extractor.identity()

    @property
    def features_version(self) -> int:
        """The extractor's ``version`` (1 for one that declares none, such as a class from a dotted path)."""
        return int(getattr(self.extractor, "version", 1))

    @property
    def libraries(self) -> tuple[str, ...]:
        return tuple(getattr(self.extractor, "libraries", ("torch",)))

    def compute(self, real: FeatureStats, fake: FeatureStats) -> list[dict]:
        """Rows ``{metric, mean, std, n, note}`` for rFID and KID."""
        note = "; ".join(filter(None, [f"extractor {self.extractor.name}", getattr(self.extractor, "note", "")]))
        if fake.n < self.extractor.dim:
            log.warning(
                "rFID on N=%d images < feature dimension %d: the covariance is rank-deficient and rFID is biased upward; "
                "compare only at equal N",
                fake.n,
                self.extractor.dim,
            )
            note += f"; N={fake.n} < feature dim {self.extractor.dim}: rank-deficient covariance, rFID biased upward"
        rows = [
            {
                "metric": "rfid",
                "mean": frechet_distance(real.mean, real.cov, fake.mean, fake.cov, real.n, fake.n),
                "std": math.nan,
                "n": fake.n,
                "note": note,
            }
        ]
        if self.with_kid:
            mean, std, m = kid(real.features, fake.features, self.kid_subsets, self.kid_subset_size, seed=self.seed)
            rows.append(
                {
                    "metric": "kid",
                    "mean": mean,
                    "std": std,
                    "n": fake.n,
                    "note": "; ".join(
                        filter(
                            None,
                            [
                                f"extractor {self.extractor.name}",
                                getattr(self.extractor, "note", ""),
                                f"{self.kid_subsets} subsets of {m}",
                            ],
                        )
                    ),
                }
            )
        return rows

    def protocol(self) -> dict:
        weights = getattr(self.extractor, "weights", None)
        weights = (
            {"weights": weights.describe(), "provenance": {"weights": weights.provenance()}}
            if weights is not None
            else {}
        )
        return {
            "rfid": {
                "implementation": "evalvae float64 Fréchet distance (nuclear norm of S1^1/2 S2^1/2, round-off eigenvalues dropped)",
                "statistics": "float64 running sums; unbiased covariance (N - 1)",
                "extractor": self.extractor.identity(),
                **weights,
                "quantization": "8-bit originals vs reconstructions rounded to 8 bits",
            },
            **(
                {
                    "kid": {
                        "implementation": "unbiased MMD^2, kernel (x.y/d + 1)^3",
                        "subsets": self.kid_subsets,
                        "subset_size": self.kid_subset_size,
                        "seed": self.seed,
                        "extractor": self.extractor.identity(),
                        **weights,
                    }
                }
                if self.with_kid
                else {}
            ),
        }
