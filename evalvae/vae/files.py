"""``files``: reconstructions made elsewhere, read from a folder and scored as they are.

Matching. A dataset image's *key* is its id with an image extension (see
:data:`~evalvae.vocab.IMAGE_EXTENSIONS`, any case) removed: ``a/b/img.jpg`` -> ``a/b/img``
(an id without one, such as the built-in ``astronaut``, is its own key). A file under the folder
has the key of its relative path less its image extension, so ``DIR/a/b/img.png`` (or ``.webp``,
``.JPG``, ...) is the reconstruction of ``a/b/img.jpg``. Keys are compared exactly (case matters);
hidden files and files without an image extension are ignored. Each image is then one of:

* scored: exactly one file has its key;
* ``missing``: none has;
* ``ambiguous``: two or more have (``img.png`` and ``img.jpg``); none is chosen, all are named;
* ``unreadable``: Pillow cannot decode the file;
* ``wrong mode``: the file is not 8-bit RGB, grayscale (``L``) or an opaque palette (``P``): alpha,
  16-bit or float samples would need a conversion that changes the values;
* ``misshapen``: its size differs from the original's after the dataset's resize/crop protocol.
  Reconstructions are taken as they are, never resized or cropped: a file at the original's
  native size, in a run at ``dataset.resolution=256``, is refused with both sizes named (save
  reconstructions of the protocol's images, or score at native size with ``dataset.crop=none``).

Files whose key matches no image are ``extra``. Images that are not scored get no row for this
VAE (the others are unaffected); every case is listed with its reason in ``files_unmatched.csv``.

Identity. The weights of this "VAE" are the folder's image files: their sha256 are its weight
files (:class:`~evalvae.vae.base.LoadedWeights`), so result chunks and saved samples of a folder
whose files changed are never reused. Its latents are the reconstructions themselves, never stored.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from evalvae.errors import ConfigError, EvalvaeError
from evalvae.io import sha256_file
from evalvae.vae.base import LatentSpace, LoadedWeights, VAEAdapter
from evalvae.vocab import IMAGE_EXTENSIONS, MEMORY_MODES

log = logging.getLogger(__name__)
MODES = ("RGB", "L", "P")  # read as they are; a palette only without transparency


def image_key(name: str) -> str:
    """``a/b/img.jpg`` -> ``a/b/img``: a relative path less its image extension (any case)."""
    path = PurePosixPath(name)
    return path.with_suffix("").as_posix() if path.suffix.lower() in IMAGE_EXTENSIONS else path.as_posix()


def list_images(root: Path) -> dict[str, list[str]]:
    """Every image file under ``root`` by key: ``{key: [relative paths]}`` (more than one: ambiguous)."""
    out: dict[str, list[str]] = {}
    for p in sorted(root.rglob("*"), key=lambda q: q.relative_to(root).as_posix()):
        rel = p.relative_to(root)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts) and p.suffix.lower() in IMAGE_EXTENSIONS:
            out.setdefault(image_key(rel.as_posix()), []).append(rel.as_posix())
    return out


def match(ids: Sequence[str], listing: Mapping[str, list[str]]) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """Image ids to files: ``(matched {id: file}, not matched {id: reason}, extra files)``."""
    matched, unmatched, used = {}, {}, set()
    for image in ids:
        key = image_key(image)
        found = listing.get(key, [])
        used.add(key)
        if len(found) == 1:
            matched[image] = found[0]
        elif found:
            unmatched[image] = (
                f"ambiguous: {len(found)} files have the stem {key!r} ({', '.join(found)}); none is chosen"
            )
        else:
            unmatched[image] = f"missing: no file {key}.<{'|'.join(e[1:] for e in IMAGE_EXTENSIONS)}>"
    extra = [f for key, files in listing.items() if key not in used for f in files]
    return matched, unmatched, extra


def read_reconstruction(path: Path, size: tuple[int, int]) -> tuple[np.ndarray | None, str]:
    """The file as ``(H, W, 3)`` uint8 if it is a readable 8-bit image of ``size`` (H, W); else None and why."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in MODES or (im.mode == "P" and "transparency" in im.info):
                mode = f"{im.mode} with transparency" if im.mode == "P" else im.mode
                return None, f"wrong mode: {mode}; reconstructions are read as they are: 8-bit RGB, L or opaque P"
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        return None, f"unreadable: {type(e).__name__}: {e}"
    if rgb.shape[:2] != tuple(size):
        h, w = rgb.shape[:2]
        return None, (
            f"misshapen: {w}x{h} px, the original is {size[1]}x{size[0]} px after the dataset's resize/crop; "
            "reconstructions are scored as they are, never resized"
        )
    return rgb, ""


class FilesAdapter(VAEAdapter):
    """Reconstructions read from ``path``: "encoding" a group reads its files, "decoding" returns them."""

    family = "files"
    memory_modes = MEMORY_MODES  # nothing to run: every mode is the same
    stores_latents = False  # the latents are the reconstructions: reading the files again is as cheap
    quantizable_latents = False  # the "latents" are the reconstructions themselves

    def __init__(self, name: str, path: str, *, device="cpu", cache_dir: str | None = None, dtype: str = "fp32"):
        if not isinstance(path, str) or not path:
            raise ConfigError(f"vae.{name}.path", path, hint="a folder holding the reconstructions")
        self.root = Path(path).expanduser().resolve()
        if not self.root.is_dir():
            raise ConfigError(f"vae.{name}.path", path, hint="this folder does not exist")
        self.listing = list_images(self.root)
        files = {f: sha256_file(self.root / f) for fs in self.listing.values() for f in fs}
        weights = LoadedWeights("files", str(self.root), files)
        super().__init__(name, nn.Module(), latent_space=LatentSpace("pixels", 3, 1), device=device, weights=weights)
        self._pending: torch.Tensor | None = None
        log.info("VAE '%s': %d reconstruction file(s) under %s", name, len(files), self.root)

    # -- the hooks of the reconstruction loop --------------------------------------------------

    def rate_bits(self, latents: torch.Tensor) -> torch.Tensor:
        """Unknown: the files say nothing about how many bits the model that made them needed."""
        return torch.full((len(latents),), math.nan, dtype=torch.float64)

    def prepare_group(self, ids: Sequence[str], images: torch.Tensor) -> dict[str, str]:
        """Read the reconstructions of ``ids`` (originals ``images``, (N, 3, H, W) uint8); return the ids not scored, with why."""
        matched, left_out, _ = match(ids, self.listing)
        size = tuple(images.shape[-2:])
        kept = []
        for image in ids:
            if image not in matched:
                continue
            rgb, why = read_reconstruction(self.root / matched[image], size)
            if rgb is None:
                left_out[image] = f"{why} ({matched[image]})"
            else:
                kept.append(torch.from_numpy(rgb.copy()).permute(2, 0, 1))
        self._pending = torch.stack(kept).to(self.device) if kept else None
        return {i: left_out[i] for i in ids if i in left_out}

    def unused_inputs(self, ids: Sequence[str]) -> list[tuple[str, str]]:
        """``(file, reason)`` of every file under the folder that matches none of the dataset's ``ids``."""
        return [(f, "extra: matches no image of the dataset") for f in match(ids, self.listing)[2]]

    # -- the adapter interface -----------------------------------------------------------------
    def _moments(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        pending, self._pending = self._pending, None
        if pending is None or pending.shape != images.shape:
            got = None if pending is None else tuple(pending.shape)
            raise EvalvaeError(
                f"VAE '{self.name}': no reconstructions read for images of shape {tuple(images.shape)} (read: {got}); "
                "the reconstruction loop calls prepare_group before encode"
            )
        return pending.double().div_(127.5).sub_(1), None

    def _decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        return z

    @torch.inference_mode()
    def encode(self, images: torch.Tensor, seeds: Sequence[int] | None = None) -> torch.Tensor:
        """The group's reconstructions (read by :meth:`prepare_group`) in [-1, 1], float64: 8-bit values kept exactly."""
        return self._moments(images)[0]

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor, seeds: Sequence[int] | None = None) -> torch.Tensor:
        """The "latents" :meth:`encode` returned: the reconstructions. Other latents (``task=t2i``) are refused."""
        if latents.ndim != 4 or latents.shape[1] != 3 or latents.dtype != torch.float64:
            raise EvalvaeError(
                f"VAE '{self.name}' (reconstructions read from files) decodes only what its encode read, "
                f"not latents of shape {tuple(latents.shape)}; it serves task=recon"
            )
        return latents

    def encoder_state_dict(self) -> Mapping[str, torch.Tensor]:
        return {}

    @property
    def encoder_hash(self) -> str:
        """sha256 over the folder's files (relative path and content): its reconstructions' identity."""
        if self._encoder_hash is None:
            h = hashlib.sha256()
            for f, digest in sorted(self.weights.files.items()):
                h.update(f"{f}\0{digest}\n".encode())
            self._encoder_hash = h.hexdigest()
        return self._encoder_hash

    def describe(self) -> dict:
        return {**super().describe(), "n_files": len(self.weights.files)}
