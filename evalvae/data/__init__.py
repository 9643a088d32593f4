"""Datasets, decoding rules and the protocol geometry."""

from evalvae.data.datasets import ImageDataset, builtin, coco, folder
from evalvae.data.hf_datasets import hf
from evalvae.data.loader import Batch, make_loader
from evalvae.data.streaming import StreamingDataset, known_len
from evalvae.data.tars import webdataset

__all__ = [
    "Batch",
    "ImageDataset",
    "StreamingDataset",
    "builtin",
    "coco",
    "folder",
    "hf",
    "known_len",
    "make_loader",
    "webdataset",
]
