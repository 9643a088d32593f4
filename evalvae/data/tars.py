"""``dataset=webdataset``: images in tar shards (the WebDataset layout), read in order with ``webdataset``.

A sample is the group of consecutive members sharing a key (the member path up to the first dot of
its file name, webdataset's ``__key__``); its image is the first of ``image_key``'s extensions it
holds (``jpg;png``: a ``.jpg`` member, else a ``.png`` one), and its id is the key. Shards are read
in the order of ``urls``, brace patterns expanded (``shards-{000..009}.tar``); local paths, ``file:``,
``http(s):``, ``pipe:`` and the other schemes of ``webdataset.gopen`` are accepted.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from urllib.parse import urlparse

from evalvae.data.streaming import Item, StreamingDataset, require
from evalvae.data.transforms import Geometry
from evalvae.errors import ConfigError, DatasetError

IMAGE_KEY = "jpg;jpeg;png;webp;bmp;tif;tiff"  # the extensions of evalvae.vocab.IMAGE_EXTENSIONS, jpg first


class TarShards(StreamingDataset):
    """The samples of ``urls`` in order, shard after shard."""

    def __init__(self, name: str, pattern: str, urls: list[str], image_key: tuple[str, ...], geometry: Geometry, limit):
        self.urls, self.image_key = urls, image_key
        super().__init__(name, pattern, geometry, limit)

    def items(self) -> Iterator[Item]:
        require("webdataset", "webdataset")
        from webdataset.gopen import gopen
        from webdataset.tariterators import group_by_keys, tar_file_expander

        for url in self.urls:
            try:
                stream = gopen(url)
            except OSError as e:
                raise DatasetError(f"webdataset shard {url} cannot be opened ({_reason(e)}); check dataset.urls") from e
            try:
                with stream:
                    for sample in group_by_keys(tar_file_expander([{"url": url, "stream": stream}])):
                        yield self.item(sample)
            except (tarfile.TarError, OSError, ValueError) as e:
                raise DatasetError(f"webdataset shard {url} is not a readable tar ({_reason(e)})") from e

    def item(self, sample: dict) -> Item:
        key = sample["__key__"]
        for ext in self.image_key:
            if ext in sample:
                return Item(key, sample[ext])
        members = ", ".join(sorted(k for k in sample if not k.startswith("__"))) or "none"
        return Item(key, reason=f"no member with extension {'/'.join(self.image_key)} (members: {members})")

    def identity(self) -> dict:
        return {"source": "webdataset", "urls": self.urls, "image_key": list(self.image_key), "limit": self.limit}

    def file_stamps(self) -> list:
        return [[p, os.stat(p).st_size, os.stat(p).st_mtime_ns] for p in map(_local_path, self.urls) if p]


def _reason(e: BaseException) -> str:
    # webdataset appends the stream and URL to an exception's args and " @ <stream>" to its message
    first = str(e.args[0]) if e.args else type(e).__name__
    return f"{type(e).__name__}: {first.split(' @ ')[0]}"


def _local_path(url: str) -> str | None:
    """The file a local URL names (no scheme, or ``file:``); None for remote ones."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return parsed.path
    return url if parsed.scheme == "" else None


def expand_urls(urls) -> list[str]:
    """Brace patterns expanded, in order: a string (``::`` separates several) or a list of them."""
    require("webdataset", "webdataset")
    from webdataset.shardlists import expand_urls as expand

    if isinstance(urls, str):
        return expand(urls)
    return [u for part in urls for u in expand(str(part))]


def webdataset(
    urls,
    image_key: str = IMAGE_KEY,
    resolution: int = 256,
    crop: str = "center",
    small: str = "upscale",
    limit: int | None = None,
    name: str = "webdataset",
) -> TarShards:
    """The images of the tar shards ``urls``; local shards must all exist before anything is read."""
    from omegaconf import ListConfig

    if isinstance(urls, ListConfig):
        urls = list(urls)
    if not urls or not isinstance(urls, (str, list)):
        raise ConfigError("dataset.urls", urls, hint="tar shards, e.g. dataset.urls=/data/shards-{000..009}.tar")
    if not isinstance(image_key, str) or not image_key.strip(";. "):
        raise ConfigError("dataset.image_key", image_key, hint="member extensions in order of preference, e.g. jpg;png")
    keys = tuple(k.strip().lstrip(".").lower() for k in image_key.split(";") if k.strip())
    geometry = Geometry(resolution=resolution, crop=crop, small=small)
    expanded = [os.path.abspath(u) if urlparse(u).scheme == "" else u for u in expand_urls(urls)]
    missing = [p for p in map(_local_path, expanded) if p and not os.path.isfile(p)]
    if missing:
        raise DatasetError(
            f"dataset.urls: shard {missing[0]} not found ({len(missing)} of {len(expanded)} shards missing)"
        )
    pattern = urls if isinstance(urls, str) else "::".join(map(str, urls))
    return TarShards(name, pattern, expanded, keys, geometry, limit)
