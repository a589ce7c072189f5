"""Training datasets (identity folders, RecordIO) and the resumable, distributed batch order.

Samples are addressed by a *global position* ``epoch * len + index``: the dataset derives the image from
``index`` and the augmentation seed from ``(seed, position)``, so a batch is a pure function of the step.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from core.images import decode_image
from core.types import CROP_SIZE

from .augment import Augmenter, to_train_tensor
from .config import AugmentSection, DataSection
from .errors import DatasetError
from .recordio import RecordIOError, RecordReader

__all__ = ["FolderSource", "RecordSource", "StepBatchSampler", "TrainDataset", "open_source"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_SHOWN = 3


def _decode_rgb(data: bytes, what: str) -> np.ndarray:
    img = decode_image(data, what, DatasetError)  # the one pixel cap, before decoding
    if img.shape[:2] != (CROP_SIZE, CROP_SIZE):
        raise DatasetError(
            f"{what}: expected an aligned {CROP_SIZE}x{CROP_SIZE} crop, got {img.shape[1]}x{img.shape[0]}"
        )
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _check_identities(num_classes: int, where: str) -> None:
    if num_classes < 2:
        raise DatasetError(
            f"{where}: expected at least 2 identities to train a classifier head, got {num_classes}"
        )


class FolderSource:
    """``root/<identity>/<image>``: identities sorted by name get labels 0..C-1."""

    def __init__(self, root: str | Path, check_sizes: bool = True):
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"dataset folder not found: {root}")
        names = sorted(d.name for d in root.iterdir() if d.is_dir())
        self.paths: list[Path] = []
        self.labels: list[int] = []
        self.class_names: list[str] = []
        for name in names:
            files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if files:
                self.paths += files
                self.labels += [len(self.class_names)] * len(files)
                self.class_names.append(name)
        _check_identities(len(self.class_names), str(root))
        if check_sizes:
            self._check_sizes()
        self.num_classes = len(self.class_names)

    def _check_sizes(self) -> None:
        """Read only each image's header; report the first few wrong ones."""
        bad = []
        for p in self.paths:
            try:
                with Image.open(p) as im:
                    size = im.size
            except OSError:
                bad.append(f"{p} (unreadable)")
                continue
            if size != (CROP_SIZE, CROP_SIZE):
                bad.append(f"{p} ({size[0]}x{size[1]})")
        if bad:
            shown = ", ".join(bad[:_SHOWN]) + (", ..." if len(bad) > _SHOWN else "")
            raise DatasetError(
                f"expected aligned {CROP_SIZE}x{CROP_SIZE} crops, got {len(bad)} other image(s): {shown}"
            )

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> tuple[np.ndarray, int]:
        path = self.paths[index]
        return _decode_rgb(path.read_bytes(), str(path)), self.labels[index]


class RecordSource:
    """An insightface ``.rec``/``.idx`` set; labels are remapped to 0..C-1 in sorted order."""

    def __init__(self, rec_path: str | Path):
        self.reader = RecordReader(rec_path)
        self.keys = self.reader.image_keys()
        raw = np.array([int(self.reader.read_label(k)[0]) for k in self.keys], dtype=np.int64)
        classes, self.labels = np.unique(raw, return_inverse=True)
        _check_identities(len(classes), str(rec_path))
        self.num_classes = len(classes)

    def __len__(self) -> int:
        return len(self.keys)

    def load(self, index: int) -> tuple[np.ndarray, int]:
        key = self.keys[index]
        _, data = self.reader.read_image(key)
        return _decode_rgb(data, f"{self.reader.rec_path} record {key}"), int(self.labels[index])


def open_source(cfg: DataSection) -> FolderSource | RecordSource:
    """The dataset the config names; errors say what was expected."""
    path = Path(cfg.path).expanduser()
    kind = cfg.format if cfg.format != "auto" else ("recordio" if path.suffix == ".rec" else "folder")
    try:
        return RecordSource(path) if kind == "recordio" else FolderSource(path, cfg.check_sizes)
    except RecordIOError as exc:
        raise DatasetError(str(exc)) from None


class TrainDataset(torch.utils.data.Dataset):
    """Global position -> (image ``[3, 120, 120]``, label, effective face size px)."""

    def __init__(self, source: FolderSource | RecordSource, augment: AugmentSection, seed: int):
        self.source = source
        self.augmenter = Augmenter(augment)
        self.seed = seed

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int, float]:
        img, label = self.source.load(position % len(self.source))
        rng = np.random.default_rng([self.seed, position])
        img, face_px = self.augmenter(img, rng)
        return to_train_tensor(img), label, face_px


class StepBatchSampler(torch.utils.data.Sampler):
    """Micro-batches of global positions for one rank, starting at micro-batch ``start``.

    Each epoch is a permutation seeded by ``(seed, epoch)``, cut to a multiple of ``batch * world``
    (the tail is dropped); rank ``r`` takes every ``world``-th batch-sized slice. Runs for ``total``
    micro-batches.
    """

    def __init__(
        self, size: int, batch_size: int, world: int, rank: int, seed: int, total: int, start: int = 0
    ):
        self.per_epoch = size // (batch_size * world)
        if self.per_epoch < 1:
            raise DatasetError(
                f"expected at least batch_size x processes = {batch_size * world} images, got {size}"
            )
        self.size, self.batch, self.world, self.rank = size, batch_size, world, rank
        self.seed, self.total, self.start = seed, total, start

    def __len__(self) -> int:
        return self.total - self.start

    def __iter__(self) -> Iterator[list[int]]:
        epoch, perm = -1, None
        for micro in range(self.start, self.total):
            e, i = divmod(micro, self.per_epoch)
            if e != epoch:
                epoch = e
                perm = torch.randperm(
                    self.size, generator=torch.Generator().manual_seed(self.seed * 100_003 + e)
                )
            begin = (i * self.world + self.rank) * self.batch
            yield [e * self.size + int(j) for j in perm[begin : begin + self.batch]]
