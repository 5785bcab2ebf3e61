"""Image sets in generic formats: JPEG packs, ImageFolder trees and torchvision's CIFAR-10 folder, decoded to
uint8 tensors; item selections ('7000:10000'). Named data sets (CIFAR-10, CIFAR-10H, CIFAR-10N) are in datasets.py."""

from __future__ import annotations

import pickle
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from teaming._validation import DataError
from teaming.decode import decode_image, decode_jpegs
from teaming.preprocess import InputContract

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class ImageSet:
    """Decoded images (uint8, N x 3 x H x W) with stable item ids, class names and optional hard labels."""

    images: torch.Tensor
    ids: list[str]
    classes: list[str]
    labels: np.ndarray | None = None
    source: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.ids)
        if n == 0:
            raise DataError(f"empty image set{' from ' + self.source if self.source else ''}")
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise DataError(
                f"images must be a uint8 tensor N x 3 x H x W, got {tuple(self.images.shape)} {self.images.dtype}"
            )
        if self.images.shape[0] != n:
            raise DataError(f"{self.images.shape[0]} images but {n} ids")
        if len(set(self.ids)) != n:
            raise DataError("item ids are not unique")
        if not self.classes:
            raise DataError("no class names")
        if self.labels is not None:
            self.labels = np.asarray(self.labels, dtype=np.int64)
            if self.labels.shape != (n,):
                raise DataError(f"{self.labels.shape[0] if self.labels.ndim else 0} labels for {n} images")
            bad = np.flatnonzero((self.labels < 0) | (self.labels >= len(self.classes)))
            if bad.size:
                raise DataError(
                    f"label id {self.labels[bad[0]]} of item {self.ids[bad[0]]} "
                    f"is out of range 0..{len(self.classes) - 1}"
                )

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    def subset(self, index: Sequence[int] | slice | np.ndarray) -> "ImageSet":
        """The items at `index`, ids and labels kept aligned."""
        idx = np.arange(len(self))[index] if isinstance(index, slice) else np.asarray(index, dtype=np.int64)
        t = torch.from_numpy(idx)
        return ImageSet(
            images=self.images[t],
            ids=[self.ids[i] for i in idx],
            classes=list(self.classes),
            labels=None if self.labels is None else self.labels[idx],
            source=self.source,
            meta=dict(self.meta),
        )

    def index_of(self, ids: Sequence[str]) -> np.ndarray:
        """Positions of the given item ids; unknown ids raise DataError."""
        pos = {item: i for i, item in enumerate(self.ids)}
        missing = [i for i in ids if i not in pos]
        if missing:
            raise DataError(f"{len(missing)} item ids have no image, e.g. {missing[0]!r}")
        return np.array([pos[i] for i in ids], dtype=np.int64)


def load_jpeg_pack(
    path: str | Path, contract: InputContract | int | None = None, prefix: str | None = None
) -> ImageSet:
    """Load the shared JPEG pack format (npz with jpeg, offsets, labels, classes); ids are '<prefix>/<index>'."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"no JPEG pack at {path}")
    with np.load(path, allow_pickle=False) as z:
        missing = {"jpeg", "offsets", "classes"} - set(z.files)
        if missing:
            raise DataError(f"{path}: not a JPEG pack, missing arrays {sorted(missing)}")
        jpeg, offsets, classes = z["jpeg"], z["offsets"].astype(np.int64), [str(c) for c in z["classes"]]
        labels = z["labels"].astype(np.int64) if "labels" in z.files else None
    n = len(offsets) - 1
    if n <= 0:
        raise DataError(f"{path}: empty JPEG pack")
    if np.any(np.diff(offsets) < 0) or offsets[0] != 0 or offsets[-1] > len(jpeg):
        raise DataError(f"{path}: offsets are not increasing within the byte array")
    prefix = prefix if prefix is not None else path.stem.removesuffix("_jpeg")
    ids = [f"{prefix}/{i}" for i in range(n)]
    blobs = [jpeg[offsets[i] : offsets[i + 1]] for i in range(n)]
    images = decode_jpegs(blobs, ids, contract)
    return ImageSet(images, ids, classes, labels, source=str(path))


_PACK_BYTES: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
# np.load parses each array header with ast.literal_eval, which CPython 3.11 cannot run in two threads at once
# ("AST constructor recursion depth mismatch", python/cpython#106905): packs are read once, under this lock.
_PACK_LOCK = threading.Lock()


def pack_jpegs(indices: Sequence[int], path: str | Path) -> list[bytes]:
    """The encoded JPEG bytes of items `indices` of a pack, undecoded (to send to the service); thread-safe."""
    path = Path(path).resolve()
    key = (str(path), path.stat().st_mtime_ns)
    with _PACK_LOCK:
        if key not in _PACK_BYTES:
            with np.load(path, allow_pickle=False) as z:
                _PACK_BYTES[key] = (z["jpeg"], z["offsets"].astype(np.int64))
        jpeg, offsets = _PACK_BYTES[key]
    return [jpeg[offsets[i] : offsets[i + 1]].tobytes() for i in indices]


@dataclass
class FolderListing:
    """The photos of a folder, undecoded: their files and ids in the order an ImageSet of it holds them, the class
    names, and each photo's class id (None for a flat folder)."""

    files: list[Path]
    ids: list[str]
    classes: list[str]
    labels: np.ndarray | None


def list_image_folder(root: str | Path, classes: Sequence[str] | None = None) -> FolderListing:
    """An ImageFolder tree (root/<class>/<image>; ids '<class>/<file>', in a stratified shuffled order, see
    `stratified_order`) or a flat folder of photos known only by their votes (root/<image>; ids the file names
    without suffix, sorted; it needs `classes`)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"no directory at {root}")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = [p for p in sorted(root.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if loose and found:
        raise DataError(f"{root} holds both class folders and loose images ({loose[0].name}): use one layout")
    if loose:
        if classes is None:
            raise DataError(f"{root} holds loose images, not class folders: name the classes (--classes classes.txt)")
        ids = [f.stem for f in loose]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise DataError(f"{root}: {len(twice)} file names differ only by suffix, e.g. {twice[0]!r}")
        return FolderListing(loose, ids, list(classes), None)
    classes = list(found if classes is None else classes)
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(f"{root}: unknown class names {unknown}; expected {classes}")
    pairs = [
        (label, file)
        for label, name in enumerate(classes)
        if (root / name).is_dir()
        for file in sorted((root / name).iterdir())
        if file.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not pairs:
        raise DataError(f"{root}: no images found (class folders of .jpg, .png, ... files, or the files alone)")
    order = stratified_order(np.array([label for label, _ in pairs]))
    pairs = [pairs[i] for i in order]
    ids = [f"{classes[label]}/{file.name}" for label, file in pairs]
    return FolderListing([f for _, f in pairs], ids, classes, np.array([label for label, _ in pairs]))


def load_image_folder(
    root: str | Path, contract: InputContract | int = 32, classes: Sequence[str] | None = None
) -> ImageSet:
    """A folder's photos (`list_image_folder`) decoded upright and shaped by `contract` (an int: stretched to that
    size)."""
    listing = list_image_folder(root, classes)
    tensors = [decode_image(f.read_bytes(), contract, item) for f, item in _progress(listing.files, listing.ids)]
    return ImageSet(torch.stack(tensors), listing.ids, listing.classes, listing.labels, source=str(root))


def _progress(files: list, ids: list[str]):
    """(file, id) pairs, with a progress bar on a terminal when there are many."""
    from tqdm.auto import tqdm

    return tqdm(list(zip(files, ids)), desc="decode", unit="img", disable=None if len(ids) > 500 else True, leave=False)


def stratified_order(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """A seeded shuffle in which every class is spread evenly, so any range of positions (0:800, 800:1000) holds
    each class in proportion: folders come sorted by class, and a plain range would leave whole classes out."""
    rng = np.random.default_rng(seed)
    key = np.empty(len(labels))
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        key[members] = (np.arange(len(members)) + rng.random(len(members))) / len(members)
    return np.argsort(key, kind="stable")


def load_torchvision_cifar10(root: str | Path, train: bool = False) -> ImageSet:
    """Load torchvision's extracted CIFAR-10 folder (cifar-10-batches-py) without downloading anything."""
    root = Path(root)
    base = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
    files = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    if not all((base / f).exists() for f in files) or not (base / "batches.meta").exists():
        raise DataError(f"{root}: not a torchvision CIFAR-10 folder (need batches.meta and {files})")
    data, labels = [], []
    for f in files:
        with open(base / f, "rb") as fh:
            entry = pickle.load(fh, encoding="latin1")
        data.append(np.asarray(entry["data"], dtype=np.uint8))
        labels.extend(entry["labels"])
    with open(base / "batches.meta", "rb") as fh:
        classes = pickle.load(fh, encoding="latin1")["label_names"]
    images = torch.from_numpy(np.concatenate(data).reshape(-1, 3, 32, 32))
    split = "train" if train else "test"
    ids = [f"cifar10_{split}/{i}" for i in range(len(labels))]
    return ImageSet(images, ids, list(classes), np.array(labels), source=str(base))
