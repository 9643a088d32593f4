"""``dataset=hf``: a split of a Hugging Face dataset, streamed (default) or downloaded, via ``datasets``.

The image column is read undecoded (``Image(decode=False)``: the file's bytes, or its path) and
decoded by evalvae's own rules, as a file from a folder is. (``datasets``' decoder would apply the
EXIF orientation, which evalvae, like torchvision's loaders, ignores.)
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from torch.utils.data import get_worker_info

from evalvae.data.streaming import Item, StreamingDataset, require
from evalvae.data.transforms import Geometry
from evalvae.errors import ConfigError, DatasetError, EvalvaeError, check_positive_int, error_reason

READ_BATCH = 16  # rows read from the source at a time
BYTES_TYPES = ("binary", "large_binary")  # a column of encoded image files
PATH_TYPES = ("string", "large_string")  # a column of image paths or URLs


class HFDataset(StreamingDataset):
    """A split of a Hugging Face dataset, yielding its rows' images in the split's order."""

    def __init__(self, source, spec: dict, image_column: str, geometry: Geometry, limit, size):
        self.source, self.spec, self.image_column = source, spec, image_column
        super().__init__(spec["name"], hf_root(spec), geometry, limit, size)

    def items(self) -> Iterator[Item]:
        if get_worker_info() is not None:
            import fsspec.asyn

            fsspec.asyn.reset_lock()  # as datasets does in a DataLoader worker: a lock forked while held would hang
        id_column = self.spec["id_column"]
        for batch in self.source.iter(batch_size=READ_BATCH):
            ids = batch[id_column] if id_column else [None] * len(batch[self.image_column])
            for value, key in zip(batch[self.image_column], ids):
                yield _item(value, None if key is None else str(key), self.image_column)

    def identity(self) -> dict:
        keys = ("name", "config", "split", "revision", "data_files", "id_column")
        return {
            "source": "hf",
            **{k: self.spec[k] for k in keys},
            "image_column": self.image_column,
            "limit": self.limit,
        }

    def describe(self) -> dict:
        return {**super().describe(), "streaming": self.spec["streaming"]}

    def read(self, location: str) -> bytes:
        if "://" not in location and "::" not in location:
            return super().read(location)
        from datasets.utils.file_utils import xopen  # remote files of a streamed repository (hf://, zip://...)

        with xopen(location, "rb") as f:
            return f.read()


def hf_root(spec: dict) -> str:
    """``hf://NAME[@REVISION][/CONFIG]/SPLIT``: where the images come from, for the results."""
    rev = f"@{spec['revision']}" if spec["revision"] else ""
    config = f"/{spec['config']}" if spec["config"] else ""
    return f"hf://{spec['name']}{rev}{config}/{spec['split']}"


def _item(value, image_id: str | None, column: str) -> Item:
    if isinstance(value, dict):
        data = value.get("bytes") if value.get("bytes") is not None else value.get("path")
    elif isinstance(value, (bytes, bytearray, str)):
        data = value
    elif value is None:
        data = None
    else:
        return Item(image_id, reason=f"column '{column}' holds a {type(value).__name__}, not an encoded image")
    if data is None:
        return Item(image_id, reason=f"no image in column '{column}'")
    return Item(image_id, bytes(data) if isinstance(data, bytearray) else data)


def _local(path):
    """A local path made absolute (the identity must not depend on the working directory); others as given."""
    if isinstance(path, str) and "://" not in path and os.path.exists(path):
        return os.path.abspath(path)
    return path


def _plain(value):
    """Hydra's ListConfig/DictConfig as plain lists and dicts; anything else unchanged."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    return OmegaConf.to_container(value) if isinstance(value, (ListConfig, DictConfig)) else value


def image_column_of(features, image_column: str | None, datasets) -> str:
    """The column holding the images: ``image_column`` if it fits, else the first ``Image`` feature."""
    columns = list(features) if features is not None else []
    if image_column is None:
        if features is None:
            hint = "the dataset declares no features; set dataset.image_column=COLUMN"
            raise ConfigError("dataset.image_column", None, hint=hint)
        images = [c for c, f in features.items() if isinstance(f, datasets.Image)]
        if not images:
            hint = "the dataset has no Image column; name the one to read"
            raise ConfigError("dataset.image_column", None, columns, hint=hint)
        return images[0]
    if features is None:
        return image_column
    if image_column not in features:
        raise ConfigError("dataset.image_column", image_column, columns)
    f = features[image_column]
    if isinstance(f, datasets.Image) or getattr(f, "dtype", None) in BYTES_TYPES + PATH_TYPES:
        return image_column
    hint = f"column '{image_column}' is {f}, not an Image, binary or path column (columns: {', '.join(columns)})"
    raise ConfigError("dataset.image_column", image_column, hint=hint)


def hf(
    name: str,
    split: str = "train",
    config: str | None = None,
    revision: str | None = None,
    data_files=None,
    image_column: str | None = None,
    id_column: str | None = None,
    streaming: bool = True,
    cache_dir: str | None = None,
    resolution: int = 256,
    crop: str = "center",
    small: str = "upscale",
    limit: int | None = None,
) -> HFDataset:
    """A split of the Hugging Face dataset ``name`` (a hub id, a local folder, or a builder such as
    ``parquet``/``imagefolder`` with ``data_files``), loaded with ``datasets.load_dataset``.

    ``streaming=True`` reads rows as they are needed; ``False`` downloads and prepares the split
    first (into ``cache_dir``, default Hugging Face's). Ids come from ``id_column``, else the
    running index. The size is known (``len()``) with ``limit``, or from the split's
    ``num_examples`` where the dataset's metadata records it (always when not streaming).
    """
    if not name or not isinstance(name, str):
        raise ConfigError(
            "dataset.name", name, hint="a Hugging Face dataset id (user/name), a local folder or a builder"
        )
    if not split or not isinstance(split, str):
        raise ConfigError("dataset.split", split, hint="the split to read, e.g. train, validation or test")
    if not isinstance(streaming, bool):
        raise ConfigError("dataset.streaming", streaming, [True, False])
    if limit is not None:
        check_positive_int("dataset.limit", limit, "a positive integer, or null for all images")
    geometry = Geometry(resolution=resolution, crop=crop, small=small)
    datasets = require("datasets", "hf")
    files = _plain(data_files)
    files = [_local(p) for p in files] if isinstance(files, list) else _local(files)
    spec = dict(name=_local(name), config=config, split=split, revision=revision, data_files=files)
    spec |= dict(id_column=id_column, streaming=streaming)
    try:
        where = dict(revision=revision, data_files=files, streaming=streaming, cache_dir=cache_dir)
        ds = datasets.load_dataset(spec["name"], config, split=split, **where)
    except EvalvaeError:
        raise
    except Exception as e:  # the hub, the file system and datasets' own checks raise many types
        raise DatasetError(_load_failure(spec, e, datasets)) from e
    column = image_column_of(ds.features, image_column, datasets)
    if id_column is not None and ds.features is not None and id_column not in ds.features:
        raise ConfigError("dataset.id_column", id_column, list(ds.features), hint="or null for the running index")
    if ds.features is not None and isinstance(ds.features[column], datasets.Image):
        ds = ds.cast_column(column, datasets.Image(decode=False))
    ds = ds.select_columns([column] + ([id_column] if id_column and id_column != column else []))
    return HFDataset(ds, spec, column, geometry, limit, _size(ds, split, streaming))


def _size(ds, split: str, streaming: bool) -> int | None:
    if not streaming:
        return len(ds)
    splits = getattr(ds.info, "splits", None) or {}
    info = splits.get(split) if hasattr(splits, "get") else None
    n = getattr(info, "num_examples", None)
    return n if isinstance(n, int) and n > 0 else None


def _load_failure(spec: dict, e: Exception, datasets) -> str:
    what = f"dataset=hf dataset.name={spec['name']!r} dataset.split={spec['split']!r}"
    if spec["config"]:
        what += f" dataset.config={spec['config']!r}"
    msg = f"{what}: cannot be loaded ({type(e).__name__}: {error_reason(e)})"
    from_hub = spec["data_files"] is None and not os.path.exists(str(spec["name"]))
    if from_hub and getattr(datasets.config, "HF_HUB_OFFLINE", False):
        return msg + "; HF_HUB_OFFLINE is set: run once with the hub reachable, or set dataset.name to a local copy"
    return msg + "; check dataset.name, data_files, config, split and revision"
