"""rFID and KID of reconstructions against the originals, from one pass of one feature extractor."""

from __future__ import annotations

import logging
import math
from typing import ClassVar

import numpy as np
import torch

from evalvae.errors import check_choice
from evalvae.metrics import info as shipped
from evalvae.metrics.base import SetMetric
from evalvae.metrics.features import FeatureExtractor, build_extractor
from evalvae.metrics.frechet import (
    KERNEL,
    KID_DDOF,
    KID_ESTIMATORS,
    KID_FORMULAS,
    FeatureStats,
    UnpairedSets,
    frechet_distance,
    kid,
    paired_features,
)

log = logging.getLogger(__name__)


class FeatureSetMetric(SetMetric):
    """A set-level metric of the per-image features of one extractor (:class:`FIDKID`, CMMD): its state, the
    extractor's identity, version and libraries, and the pairing of each reconstruction with its original.

    ``estimator_asked`` is the configured estimator; :meth:`unpaired` (sets that are not pairs, as task=t2i's
    decodes against a reference set) makes :attr:`estimator` the ``UNPAIRED`` one, and :meth:`pairs` falls back to
    it, with a caveat, where the stored features cannot be paired.
    """

    UNPAIRED: ClassVar[str]  # the estimator of two independent samples
    keeps_features = True  # the statistics keep every feature, with its image's position (the pairs)

    def __init__(self, extractor: FeatureExtractor, estimator: str):
        self.extractor, self.estimator_asked = extractor, estimator
        self.unpaired_reason = ""  # why the sets are not paired; "" where they are
        self.fallbacks: set[str] = set()  # why a paired estimate fell back to the unpaired one

    def unpaired(self, reason: str) -> FeatureSetMetric:
        """The two sets this metric will compare are not paired image by image (``reason`` says why): the
        unpaired estimator is used, and the protocol says so."""
        self.unpaired_reason = reason
        return self

    @property
    def estimator(self) -> str:
        """The estimator this metric uses: the configured one, or the unpaired one for unpaired sets."""
        return self.UNPAIRED if self.unpaired_reason else self.estimator_asked

    def new_state(self) -> FeatureStats:
        return FeatureStats(self.extractor.dim, keep_features=self.keeps_features)

    def features(self, images_u8: torch.Tensor) -> np.ndarray:
        return self.extractor(images_u8)

    def features_on_device(self, images_u8: torch.Tensor) -> torch.Tensor:
        extract = getattr(self.extractor, "extract", None)  # an extractor from a dotted path may lack it
        return extract(images_u8) if extract is not None else torch.as_tensor(self.extractor(images_u8))

    def add(self, state: FeatureStats, features: np.ndarray, index=None) -> None:
        state.update(features, index)

    def reference_identity(self) -> dict:
        return self.extractor.identity()

    @property
    def features_version(self) -> int:
        """The extractor's ``version`` (1 for one that declares none, such as a class from a dotted path)."""
        return int(getattr(self.extractor, "version", 1))

    @property
    def libraries(self) -> tuple[str, ...]:
        return tuple(getattr(self.extractor, "libraries", ("torch",)))

    def pairs(self, real: FeatureStats, fake: FeatureStats, what: str) -> tuple[str, np.ndarray, np.ndarray, list[str]]:
        """``(estimator, x, y, caveats)``: under the paired estimator each reconstruction's features (``y``) with
        its original's (``x``), else both sets as they are. Where they cannot be paired, the unpaired estimator,
        with the reason among the caveats (and logged, naming ``what``)."""
        estimator, x, y, caveats = self.estimator, real.features, fake.features, []
        if estimator != "paired":
            return estimator, x, y, caveats
        try:
            x, y, left_out = paired_features(real, fake)
        except UnpairedSets as e:
            reason = f"the images could not be paired ({e}): {FALLBACKS[self.UNPAIRED]} used instead"
            log.warning("%s: %s", what, reason)
            self.fallbacks.add(str(e))
            return self.UNPAIRED, x, y, [reason]
        if left_out:
            caveats.append(f"{left_out} original(s) without a finite reconstruction left out of the pairs")
        return estimator, x, y, caveats


FALLBACKS = {"independent": "independent-samples estimator", "reference": "the reference estimator"}


class FIDKID(FeatureSetMetric):
    """Set-level metrics ``rfid`` (lower is better) and, unless ``kid=false``, ``kid``.

    rFID is the Fréchet distance between Gaussian fits (float64 mean and unbiased covariance) of
    the originals' and the reconstructions' features. KID is the polynomial-kernel MMD^2 over
    ``kid_subsets`` subsets of ``kid_subset_size`` images (:func:`evalvae.metrics.frechet.kid`). Both
    see 8-bit images.

    ``kid_estimator``: ``paired`` (default) pairs each reconstruction with its own original, by the
    images' dataset positions, and leaves the paired terms ``k(x_i, y_i)`` out; ``independent`` is the
    estimator of torch-fidelity and clean-fid, which assumes two independent samples and is biased
    (negative) on paired sets. Where the two sets are not paired (task=t2i's decodes against a
    reference set) :meth:`unpaired` makes KID independent whatever was asked.
    """

    infos = (shipped.RFID, shipped.KID)  # kid=false: rFID alone (see __init__)
    version = 1  # of compute(): the Fréchet distance and KID from the features

    def __init__(
        self,
        extractor="inception",
        weights: str | None = None,
        resize: str = "clean",
        kid: bool = True,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        kid_estimator: str = "paired",
        seed: int = 0,
    ):
        estimator = check_choice("metrics.fid.kid_estimator", kid_estimator, KID_ESTIMATORS)
        super().__init__(build_extractor(extractor, weights, resize), estimator)
        self.with_kid, self.kid_subsets, self.kid_subset_size, self.seed = bool(kid), kid_subsets, kid_subset_size, seed
        self.infos = (shipped.RFID, shipped.KID) if self.with_kid else (shipped.RFID,)

    UNPAIRED = "independent"  # KID's estimator of two independent samples (torch-fidelity's, clean-fid's)

    @property
    def keeps_features(self) -> bool:
        """Whether the statistics keep the features themselves (KID's subsets need them; rFID does not)."""
        return self.with_kid

    def compute(self, real: FeatureStats, fake: FeatureStats) -> dict[str, dict]:
        """``{mean, std, n, note}`` of rFID and KID."""
        note = "; ".join(filter(None, [f"extractor {self.extractor.name}", getattr(self.extractor, "note", "")]))
        if fake.n < self.extractor.dim:
            title = self.infos[0].title
            log.warning(
                "%s on N=%d images < feature dimension %d: the covariance is rank-deficient and %s is biased upward; "
                "compare only at equal N",
                title,
                fake.n,
                self.extractor.dim,
                title,
            )
            note += f"; N={fake.n} < feature dim {self.extractor.dim}: rank-deficient covariance, {title} biased upward"
        fid = frechet_distance(real.mean, real.cov, fake.mean, fake.cov, real.n, fake.n)
        out = {"rfid": {"mean": fid, "std": math.nan, "n": fake.n, "note": note}}
        if self.with_kid:
            out["kid"] = self.kid_row(real, fake)
        return out

    def kid_row(self, real: FeatureStats, fake: FeatureStats) -> dict:
        """KID's ``{mean, std, n, note}``: the configured estimator where the sets pair, with a note on the pairs and the std."""
        estimator, x, y, caveats = self.pairs(real, fake, "KID")
        k = kid(x, y, self.kid_subsets, self.kid_subset_size, seed=self.seed, estimator=estimator)
        described = (
            f"paired estimator over {len(y)} image pairs"
            if estimator == "paired"
            else "independent-samples estimator (as torch-fidelity, clean-fid)"
        )
        if k.identical_subsets:
            whole = f"{k.subset_size} pairs" if estimator == "paired" else f"{k.subset_size} images per set"
            spread = f"no std: every subset is the whole set of {whole}, so the subsets do not vary"
        elif self.kid_subsets < 2:
            spread = "no std: one subset"
        else:
            spread = f"std over subsets, ddof {KID_DDOF}"
        note = [
            f"extractor {self.extractor.name}",
            getattr(self.extractor, "note", ""),
            f"{self.kid_subsets} subsets of {k.subset_size}",
            described,
            *caveats,
            spread,
        ]
        return {"mean": k.mean, "std": k.std, "n": fake.n, "note": "; ".join(filter(None, note))}

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
                        "implementation": "evalvae float64 MMD^2 (evalvae.metrics.frechet.kid)",
                        **self.kid_protocol(),
                        "extractor": self.extractor.identity(),
                        **weights,
                    }
                }
                if self.with_kid
                else {}
            ),
        }

    def kid_protocol(self) -> dict:
        """What defines the KID number: estimator, formula, kernel, subsets, subset size, ddof, seed."""
        estimator = self.estimator
        out = {
            "estimator": estimator,
            "formula": f"KID = mean over subsets of MMD^2 = {KID_FORMULAS[estimator]}; {KERNEL}; m = min(subset_size, N)",
            "subsets": self.kid_subsets,
            "subset_size": self.kid_subset_size,
            "sampling": "numpy.random.RandomState(seed).choice(N, m, replace=False) per subset"
            + (", one draw for both sets" if estimator == "paired" else ", real then fake (torch-fidelity's draws)"),
            "std_ddof": KID_DDOF,
            "std": "over subsets; none (NaN) where every subset is the whole set (m = N) or there is one subset",
            "seed": self.seed,
        }
        if estimator == "paired":
            out["pairing"] = "each reconstruction with its own original, by dataset position"
        if self.unpaired_reason:
            out["why_independent"] = self.unpaired_reason
        if self.fallbacks:
            out["unpaired_fallback"] = sorted(self.fallbacks)
        return out
