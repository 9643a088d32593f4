"""The networks behind the learned metrics: finding their weights, reading them safely, knowing them.

evalvae reads every weights file itself (safetensors, or ``torch.load(weights_only=True)``) and
hands tensors, never paths, to third-party code: torch-fidelity 0.4, for one, unpickles a path it
is given with ``weights_only=False``.

A network is identified by a hash of the tensors the metric actually uses (LPIPS: the
backbone's ``features.*`` convolutions; FID: every Inception tensor up to pool3, without the
classifier and BatchNorm's unused ``num_batches_tracked``), as float32 with their names and
shapes (:func:`evalvae.checkpoints.state_dict_sha256`). So torchvision's full ImageNet files and
copies that hold only the features are recognised as the same network, and anything else is
reported as non-standard weights: in ``metrics.json``, in ``summary.csv``'s note and in the report.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from evalvae.checkpoints import read_tensors, state_dict_sha256
from evalvae.errors import EvalvaeError
from evalvae.io import sha256_file

log = logging.getLogger(__name__)


# A folder holding the learned metrics' networks, as make-weights writes it: lpips/alexnet_features.pth,
# lpips/vgg16_features.pth, fid/pt_inception-2015-12-05_torch-fidelity.pth (metrics.*.weights win over it).
WEIGHTS_ENV = "EVALVAE_WEIGHTS"


class MetricUnavailable(EvalvaeError):
    """A metric's weights cannot be had; the metric is reported as unavailable, never faked."""


def torch_hub_file(names: tuple[str, ...]) -> Path | None:
    """The first of ``names`` present in torch's hub checkpoint cache, if any."""
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    return next((folder / n for n in names if (folder / n).is_file()), None)


def find_weights(
    given: str | None, names: tuple[str, ...], argument: str, what: str, url: str, in_folder: tuple[str, ...] = ()
) -> Path:
    """The weights file ``given`` (the value of ``argument``); else, when ``$EVALVAE_WEIGHTS`` names a
    folder, the first of ``in_folder`` (paths inside it) found there; else the first of ``names`` in
    torch's hub cache.

    Raises :class:`MetricUnavailable` saying where it looked, where to download and what to set. With
    ``$EVALVAE_WEIGHTS`` set, the folder is the only place looked in (besides ``given``).
    """
    folder = os.environ.get(WEIGHTS_ENV)
    if not given and folder and in_folder:
        root = Path(folder).expanduser()
        found = next((root / rel for rel in in_folder if (root / rel).is_file()), None)
        if found is None:
            others = f" (or {', '.join(in_folder[1:])} there)" if in_folder[1:] else ""
            raise MetricUnavailable(
                f"{what} not found: {WEIGHTS_ENV}={folder} but {root / in_folder[0]} does not exist{others}; "
                f"put the file there (download {url}) or set {argument}=PATH"
            )
        return found
    path = Path(given).expanduser() if given else torch_hub_file(names)
    if path is None or not path.is_file():
        where = f"{argument}={given}" if given else f"torch's hub cache ({Path(torch.hub.get_dir()) / 'checkpoints'})"
        raise MetricUnavailable(f"{what} not found in {where}; download {url} and set {argument}=PATH")
    return path


def read_state_dict(path: Path, argument: str) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file or of a torch file, read with ``weights_only=True``.

    A file that is neither (or that holds anything but tensors) makes the metric unavailable.
    """
    try:
        state = read_tensors(path)
    except Exception as e:  # unreadable, truncated, or holding more than tensors
        raise MetricUnavailable(
            f"{argument}={path} cannot be read as safetensors or torch.load(weights_only=True) "
            f"({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''})"
        ) from None
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MetricUnavailable(f"{argument}={path} is not a state dict of tensors")
    return dict(state)


@dataclass(frozen=True)
class NetworkWeights:
    """Where a metric's network came from and whether it is the standard one."""

    what: str  # e.g. "LPIPS-alex backbone"
    path: str
    file_sha256: str
    tensors_sha256: str  # of the tensors the metric uses
    standard: bool

    def describe(self) -> dict:
        """What identifies the network (protocol): whether it is the standard one, and its tensors' hash."""
        return {"standard": self.standard, "tensors_sha256": self.tensors_sha256}

    def provenance(self) -> dict:
        """Where it was read from (recorded, not protocol: the same network may sit in any file)."""
        return {"file": self.path, "file_sha256": self.file_sha256}

    @property
    def note(self) -> str:
        """``""`` for the standard network, else the warning that goes next to the number."""
        if self.standard:
            return ""
        return f"non-standard weights: {self.what} tensors sha256 {self.tensors_sha256[:12]}, not comparable to published numbers"


def load_network(
    path: Path, argument: str, what: str, used: Callable[[str], bool], standard_sha256: str
) -> tuple[dict[str, torch.Tensor], NetworkWeights]:
    """Read ``path``, keep the tensors ``used`` selects by name, and identify them against ``standard_sha256``."""
    state = read_state_dict(path, argument)
    kept = {k: v for k, v in state.items() if used(k)}
    if not kept:
        raise MetricUnavailable(
            f"{argument}={path} holds none of the {what} tensors (keys such as {', '.join(list(state)[:3])})"
        )
    digest = state_dict_sha256(kept)
    info = NetworkWeights(what, str(path), sha256_file(path), digest, digest == standard_sha256)
    if not info.standard:
        log.warning("%s (%s): %s", argument, path, info.note)
    return kept, info
