"""Datasets, decoding rules and the protocol geometry."""

from evalvae.data.datasets import ImageDataset, builtin, coco, folder
from evalvae.data.loader import Batch, make_loader

__all__ = ["Batch", "ImageDataset", "builtin", "coco", "folder", "make_loader"]
