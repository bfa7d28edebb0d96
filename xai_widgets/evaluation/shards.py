"""Data sources, shards and the Parquet shard store of an evaluation.

A run is cut into **shards**: contiguous index ranges of the data set. Each finished shard is written as
one Parquet file per method, named by a **key** that holds everything its rows depend on: the weights'
fingerprint, the data's identity, the method and its options, the metrics and their options, the target
rule, the seed and the index range. A rerun with the same ``out`` folder reads the files whose key it
finds and computes only the rest; a file is written to a temporary name and renamed, so a killed run never
leaves half a shard.

Data come as pictures in [0, 1] (the model's preprocessing is applied inside), from:
- a tensor N×C×H×W (``labels=`` and ``masks=`` optional), or a ``ShapesBatch``;
- ``"shapes:N"`` (``make_shapes(N, size=<the model's input size>, seed=0)``, with labels and masks);
- a torch ``Dataset`` (or a ``DataLoader``, whose ``dataset`` is read) yielding ``image``, ``(image,
  label)`` or ``(image, label, mask)``. A dataset travels to each worker once and is indexed there; an item
  that fails to load becomes an error row. Its identity in the shard keys is its class and length (tensors
  are identified by a hash of their bytes), so keep one ``out`` folder per dataset.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from ..errors import InputError

KEY_VERSION = 1


@dataclass
class Item:
    """What a shard reads: pictures (None where an item failed to load), labels, masks, errors."""

    index: int
    image: Tensor | None
    label: int | None
    mask: Tensor | None
    error: str | None = None


class TensorSource:
    """Pictures held in memory: a shard's slice travels with its task."""

    def __init__(
        self, images: Tensor, labels: Tensor | None = None, masks: Tensor | None = None, key: str = ""
    ):
        if not isinstance(images, Tensor) or images.ndim != 4:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise InputError(f"data must be pictures N×C×H×W in [0, 1], got {shape}")
        n = images.shape[0]
        if labels is not None:
            labels = torch.as_tensor(labels).reshape(-1).long()
            if labels.shape[0] != n:
                raise InputError(f"got {labels.shape[0]} labels for {n} images")
        if masks is not None:
            masks = torch.as_tensor(masks)
            if masks.ndim == 4 and masks.shape[1] == 1:
                masks = masks[:, 0]
            if masks.ndim != 3 or masks.shape[0] != n:
                raise InputError(f"masks must be N×H×W for the {n} images, got {tuple(masks.shape)}")
            masks = masks.bool()
        self.images, self.labels, self.masks = images, labels, masks
        self.key = key or _tensor_key(images, labels, masks)

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def has_masks(self) -> bool:
        return self.masks is not None

    @property
    def has_labels(self) -> bool:
        return self.labels is not None

    def payload(self, start: int, stop: int) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Copies of the shard's slices: a pickled view would carry the whole data set's storage."""
        pick = slice(start, stop)
        return (
            self.images[pick].detach().cpu().clone(),
            None if self.labels is None else self.labels[pick].clone(),
            None if self.masks is None else self.masks[pick].clone(),
        )

    shared = None

    @staticmethod
    def read(shared: Any, payload: Any, start: int, stop: int) -> list[Item]:
        images, labels, masks = payload
        return [
            Item(
                start + i,
                images[i],
                None if labels is None else int(labels[i]),
                None if masks is None else masks[i],
            )
            for i in range(stop - start)
        ]


class DatasetSource:
    """A torch Dataset: it travels to every worker once; a shard reads its index range there."""

    def __init__(self, dataset: Any, key: str = "") -> None:
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise InputError(f"a Dataset needs __getitem__ and __len__, got {type(dataset).__name__}")
        self.shared = dataset
        self.length = len(dataset)
        self.key = key or f"dataset:{type(dataset).__module__}.{type(dataset).__qualname__}:{self.length}"
        first = dataset[0] if self.length else None
        self.has_masks = isinstance(first, (tuple, list)) and len(first) >= 3
        self.has_labels = isinstance(first, (tuple, list)) and len(first) >= 2

    def __len__(self) -> int:
        return self.length

    def payload(self, start: int, stop: int) -> None:
        return None

    @staticmethod
    def read(shared: Any, payload: Any, start: int, stop: int) -> list[Item]:
        items = []
        for index in range(start, stop):
            try:
                entry = shared[index]
                if isinstance(entry, (tuple, list)):
                    image = entry[0]
                    label = int(entry[1]) if len(entry) > 1 and entry[1] is not None else None
                    mask = torch.as_tensor(entry[2]).bool() if len(entry) > 2 else None
                else:
                    image, label, mask = entry, None, None
                image = torch.as_tensor(image)
                if mask is not None and mask.ndim == 3 and mask.shape[0] == 1:
                    mask = mask[0]
                items.append(Item(index, image, label, mask))
            except Exception as error:  # a broken file or transform: report it, go on
                items.append(
                    Item(index, None, None, None, f"loading failed: {type(error).__name__}: {error}")
                )
        return items


def as_source(data: Any, labels: Any = None, masks: Any = None, input_size: tuple | None = None) -> Any:
    """The data source for ``data`` (see the module docstring)."""
    from ..data.shapes import ShapesBatch, make_shapes

    if isinstance(data, str):
        name, _, count = data.partition(":")
        if name != "shapes" or not count.isdigit() or int(count) < 1:
            raise InputError(
                f"data given as text must read 'shapes:N' (N synthetic shapes images), got {data!r}"
            )
        size = int(input_size[-1]) if input_size else 64
        batch = make_shapes(int(count), size=size, seed=0)
        return TensorSource(*batch, key=f"shapes:{count}:{size}:seed0")
    if isinstance(data, ShapesBatch):
        return TensorSource(
            data.images, data.labels if labels is None else labels, data.masks if masks is None else masks
        )
    if isinstance(data, Tensor):
        return TensorSource(data, labels, masks)
    if isinstance(data, torch.utils.data.DataLoader):
        data = data.dataset
    if isinstance(data, torch.utils.data.Dataset) or (
        hasattr(data, "__getitem__") and hasattr(data, "__len__")
    ):
        if labels is not None or masks is not None:
            raise InputError("a Dataset brings its own labels and masks: yield (image, label, mask) instead")
        return DatasetSource(data)
    raise InputError(
        "data must be a tensor of pictures N×C×H×W in [0, 1], a ShapesBatch, 'shapes:N', or a torch "
        f"Dataset/DataLoader yielding (image, label[, mask]); got {type(data).__name__}"
    )


def _tensor_key(*tensors: Tensor | None) -> str:
    digest = hashlib.sha1()
    for tensor in tensors:
        if tensor is None:
            digest.update(b"none;")
            continue
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{data.dtype}:{tuple(data.shape)};".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return "tensor:" + digest.hexdigest()


def shard_ranges(n: int, size: int) -> list[tuple[int, int]]:
    """Contiguous index ranges [start, stop) of at most ``size`` items covering 0..n."""
    return [(start, min(n, start + size)) for start in range(0, n, size)]


def shard_key(**parts: Any) -> str:
    """SHA-1 of the JSON of everything a shard's rows depend on (sorted keys; options as given)."""
    text = json.dumps({"version": KEY_VERSION, **parts}, sort_keys=True, default=repr)
    return hashlib.sha1(text.encode()).hexdigest()


class ShardStore:
    """Parquet files, one per finished (method, shard), in ``folder``."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, method: str, start: int, stop: int, key: str) -> Path:
        return self.folder / f"{method}-{start:08d}-{stop:08d}-{key[:16]}.parquet"

    def has(self, path: Path) -> bool:
        return path.is_file()

    def read(self, path: Path) -> pd.DataFrame:
        return pd.read_parquet(path)

    def write(self, path: Path, frame: pd.DataFrame) -> None:
        """Write atomically: a temporary file renamed into place (a killed run leaves no partial shard)."""
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        frame.to_parquet(partial, index=False)
        os.replace(partial, path)
