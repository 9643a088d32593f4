"""Image datasets: ``builtin`` (scikit-image's photos), ``folder`` and ``coco``.

Each builder returns an :class:`ImageDataset`: a sorted list of image records plus the protocol
geometry. Unreadable files never stop a run; they come back as skipped samples with a reason.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from evalvae.data.images import UnreadableImage, load_rgb8
from evalvae.data.transforms import Geometry, TooSmall
from evalvae.errors import ConfigError, DatasetError, check_positive_int
from evalvae.io import sha256_file
from evalvae.vocab import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)

# scikit-image's bundled RGB photographs (no download needed), by file in skimage.data.data_dir.
BUILTIN_IMAGES = {
    "astronaut": "astronaut.png",  # Eileen Collins, NASA, 512x512
    "chelsea": "chelsea.png",  # a cat, 300x451
    "coffee": "coffee.png",  # a cup of coffee, 400x600
    "rocket": "rocket.jpg",  # SpaceX Falcon 9 launch, 427x640
    "motorcycle_left": "motorcycle_left.png",  # Middlebury stereo pair, left view, 500x741
    "motorcycle_right": "motorcycle_right.png",  # right view
    "hubble_deep_field": "hubble_deep_field.jpg",  # NASA/ESA, 872x1000
    "immunohistochemistry": "ihc.png",  # stained tissue micrograph, 512x512
    "retina": "retina.jpg",  # fundus photograph, 1411x1411
}


@dataclass(frozen=True)
class ImageRecord:
    id: str
    path: Path
    meta: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass
class Sample:
    index: int
    id: str
    image: torch.Tensor | None = None  # (3, H, W) uint8
    upscaled: bool = False
    reason: str = ""  # why it was skipped, when image is None
    truth: list | None = None  # ground-truth regions (evalvae.vocab.Region) where the dataset knows them


class ImageDataset(Dataset):
    """Images decoded to 8-bit RGB and put through the protocol geometry, in a fixed order."""

    def __init__(
        self, name: str, root: str, records: list[ImageRecord], geometry: Geometry, skipped: list | None = None
    ):
        self.name, self.root, self.records, self.geometry = name, root, records, geometry
        self.listing_skipped = list(skipped or [])  # files rejected before decoding, (file, reason)
        self.indices: range = range(len(records))  # the records this view yields (all, unless sharded)
        self._fingerprint: str | None = None
        if not records:
            raise DatasetError(f"dataset '{name}' at {root} has no images (looked for {', '.join(IMAGE_EXTENSIONS)})")

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> Sample:
        index = self.indices[position]
        rec = self.records[index]
        try:
            rgb, _ = load_rgb8(rec.path)
            image, upscaled = self.geometry.apply(rgb)
        except (UnreadableImage, TooSmall) as e:
            return Sample(index, rec.id, reason=str(e))
        return Sample(index, rec.id, image, upscaled)

    def shard(self, rank: int, world_size: int) -> ImageDataset:
        """A view of the images with ``index % world_size == rank``, keeping their indices (``Sample.index``).

        ``records``, :meth:`describe` and :meth:`fingerprint` stay the whole dataset's.
        """
        check_shard(rank, world_size)
        view = copy.copy(self)
        view.indices = self.indices[rank::world_size]
        return view

    def describe(self) -> dict:
        return {"name": self.name, "root": self.root, "n_files": len(self.records), **self.geometry.describe()}

    def fingerprint(self) -> str:
        """sha256 over every record's id and file content: equal datasets hash equally wherever they live."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for rec, digest in zip(self.records, self.file_digests()):
                h.update(rec.id.encode() + b"\0" + digest.encode() + b"\n")
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def file_digests(self) -> list[str]:
        """sha256 of each record's file, in record order (read once, then remembered)."""
        if getattr(self, "_file_digests", None) is None:
            self._file_digests = [sha256_file(rec.path) for rec in self.records]
        return self._file_digests


def check_shard(rank: int, world_size: int) -> None:
    """Raise a :class:`ConfigError` unless ``rank`` is an integer in ``0..world_size - 1``."""
    check_positive_int("world_size", world_size)
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ConfigError("rank", rank, hint=f"an integer in 0..{world_size - 1} (world_size={world_size})")


def _geometry(resolution, crop, small) -> Geometry:
    return Geometry(resolution=resolution, crop=crop, small=small)


def _limit(records: list[ImageRecord], limit: int | None) -> list[ImageRecord]:
    if limit is None:
        return records
    check_positive_int("dataset.limit", limit, "a positive integer, or null for all images")
    return records[:limit]


def _root(path: str | None, hint: str) -> Path:
    if path is None:
        raise ConfigError("dataset.path", path, hint=hint)
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DatasetError(f"dataset.path={path!r} is not a directory")
    return root


def folder(
    path: str,
    resolution: int = 256,
    crop: str = "center",
    small: str = "upscale",
    limit: int | None = None,
    name: str = "folder",
) -> ImageDataset:
    """Every image file under ``path``, recursively, in sorted order of relative path.

    Hidden files are ignored; other files are recorded as skipped with the reason.
    """
    root = _root(path, "set dataset.path=/dir/with/images")
    records, skipped = [], []
    for p in sorted(root.rglob("*"), key=lambda q: q.relative_to(root).as_posix()):
        rel = p.relative_to(root).as_posix()
        if not p.is_file() or any(part.startswith(".") for part in p.relative_to(root).parts):
            continue
        if p.suffix.lower() in IMAGE_EXTENSIONS:
            records.append(ImageRecord(rel, p))
        else:
            skipped.append((rel, f"not an image extension ({p.suffix or 'none'})"))
    return ImageDataset(name, str(root.resolve()), _limit(records, limit), _geometry(resolution, crop, small), skipped)


def builtin(
    resolution: int = 256, crop: str = "center", small: str = "upscale", limit: int | None = None, name: str = "builtin"
) -> ImageDataset:
    """scikit-image's bundled RGB photographs (offline), in the order of :data:`BUILTIN_IMAGES`."""
    import skimage.data

    root = Path(skimage.data.data_dir)
    records = [ImageRecord(key, root / fname) for key, fname in BUILTIN_IMAGES.items()]
    return ImageDataset(name, f"skimage.data ({root})", _limit(records, limit), _geometry(resolution, crop, small))


def coco(
    path: str,
    captions: str | None = None,
    resolution: int = 256,
    crop: str = "center",
    small: str = "upscale",
    limit: int | None = None,
    name: str = "coco",
) -> ImageDataset:
    """Images listed in a COCO-format captions JSON (``images[].file_name``), with their captions.

    ``captions`` defaults to ``<path>/captions.json``. Listed files missing from ``path`` are skipped.
    """
    root = _root(path, "set dataset.path=/dir/with/coco/images")
    cap_path = Path(captions).expanduser() if captions else root / "captions.json"
    if not cap_path.is_file():
        raise DatasetError(
            f"COCO captions file {cap_path} not found; set dataset.captions=/path/to/captions_val2017.json"
        )
    try:
        doc = json.loads(cap_path.read_text(encoding="utf-8"))
        by_id: dict[int, list[str]] = {}
        for ann in doc.get("annotations", []):
            by_id.setdefault(ann["image_id"], []).append(ann["caption"].strip())
        images = sorted(doc["images"], key=lambda im: im["file_name"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DatasetError(f"{cap_path} is not a COCO captions file ({type(e).__name__}: {e})") from None
    records, skipped = [], []
    for im in images:
        p = root / im["file_name"]
        if p.is_file():
            records.append(ImageRecord(im["file_name"], p, {"coco_id": im["id"], "captions": by_id.get(im["id"], [])}))
        else:
            skipped.append((im["file_name"], f"listed in {cap_path.name} but missing from dataset.path"))
    return ImageDataset(name, str(root.resolve()), _limit(records, limit), _geometry(resolution, crop, small), skipped)
