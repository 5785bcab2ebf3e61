"""Named data: the CIFAR-10 test images and CIFAR-10H votes that ship inside the package, CIFAR-10 train and
CIFAR-10N from the shared data folder, and the specs the command line names them by ('default', 'cifar10h',
'cifar10n:random_label1', a path)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from teaming._validation import DataError
from teaming.data import ImageSet, load_image_folder, load_jpeg_pack, load_torchvision_cifar10, pack_jpegs
from teaming.labels import HumanLabels
from teaming.preprocess import InputContract

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
EMBEDDED_DIR = Path(__file__).parent / "embedded"
DEFAULT_PACK = EMBEDDED_DIR / "cifar10_test_jpeg.npz"


def load_default_test() -> ImageSet:
    """The embedded CIFAR-10 test images (10,000, JPEG q75) that ship inside the package: decoded once per process
    (2 s), each call a set of its own over the same pixels (which no caller changes in place)."""
    global _DEFAULT_TEST
    if _DEFAULT_TEST is None:
        _DEFAULT_TEST = load_jpeg_pack(DEFAULT_PACK, prefix="cifar10_test")
        _DEFAULT_TEST.source = "embedded CIFAR-10 test images (teaming/embedded/cifar10_test_jpeg.npz, JPEG q75)"
    d = _DEFAULT_TEST
    return replace(d, ids=list(d.ids), classes=list(d.classes), labels=d.labels.copy(), meta=dict(d.meta))


_DEFAULT_TEST: ImageSet | None = None


def default_test_jpegs(indices: Sequence[int]) -> list[bytes]:
    """The encoded JPEG bytes of embedded CIFAR-10 test images (what a client sends the service)."""
    return pack_jpegs(indices, DEFAULT_PACK)


def load_cifar10h(path: str | Path | None = None, classes: Sequence[str] | None = None) -> HumanLabels:
    """CIFAR-10H counts for the 10,000 test images, ids 'cifar10_test/<index>' (embedded copy by default)."""
    path = Path(path) if path else EMBEDDED_DIR / "cifar10h_counts.npz"
    with np.load(path) as z:
        counts = z["counts"]
    classes = list(classes) if classes else CIFAR10_CLASSES
    return HumanLabels.from_counts(counts, classes, [f"cifar10_test/{i}" for i in range(len(counts))])


def load_cifar10n(
    path: str | Path, columns: Sequence[str] = ("random_label1", "random_label2", "random_label3")
) -> HumanLabels:
    """CIFAR-10N annotator columns for the 50,000 training images, ids 'cifar10_train/<index>'."""
    with np.load(path) as z:
        unknown = [c for c in columns if c not in z.files]
        if unknown:
            raise DataError(f"{path}: unknown label columns {unknown}; available: {z.files}")
        cols = [z[c] for c in columns]
    return HumanLabels.from_annotators(cols, CIFAR10_CLASSES, [f"cifar10_train/{i}" for i in range(len(cols[0]))])


def shared_data_dir() -> Path | None:
    """The shared data folder beside the checkout (../shared/data), or TEAMING_DATA; None when absent."""
    candidates = [os.environ.get("TEAMING_DATA"), Path(__file__).resolve().parents[2] / "shared" / "data"]
    for c in candidates:
        if c and (Path(c) / "cifar10_train_jpeg.npz").exists():
            return Path(c)
    return None


def load_images(
    spec: str | Path, contract: InputContract | int | None = None, classes: Sequence[str] | None = None
) -> ImageSet:
    """Load by path or name: 'default' (embedded test set), a .npz pack, an ImageFolder (or a flat folder of
    photos named by item id, with `classes`) or a CIFAR-10 folder, shaped by a model's input contract (an int:
    stretched to that size; folders default to 32).

    `classes` fixes an ImageFolder's class order (a model's classes), so missing folders don't shift label ids.
    """
    if str(spec) == "default":
        return load_default_test()
    path = Path(spec)
    if path.suffix == ".npz":
        return load_jpeg_pack(path, contract)
    if path.is_dir() and ((path / "cifar-10-batches-py").is_dir() or (path / "batches.meta").exists()):
        return load_torchvision_cifar10(path, train=False)
    return load_image_folder(path, contract or 32, classes)


def resolve_labels(spec: str, images: ImageSet) -> HumanLabels | np.ndarray:
    """'hard', 'cifar10h[:PATH]', 'cifar10n[:col,col]' or a long CSV path -> targets aligned with `images`."""
    if spec == "hard":
        if images.labels is None:
            raise DataError("these images carry no hard labels")
        return images.labels
    if spec.startswith("cifar10h"):
        path = spec.split(":", 1)[1] if ":" in spec else None
        human = load_cifar10h(path, images.classes)
    elif spec.startswith("cifar10n"):
        cols = spec.split(":", 1)[1].split(",") if ":" in spec else ["random_label1", "random_label2", "random_label3"]
        shared = shared_data_dir()
        if shared is None:
            raise DataError("CIFAR-10N labels live in ../shared/data (or $TEAMING_DATA), which is absent")
        human = load_cifar10n(shared / "cifar10n_labels.npz", cols)
    else:
        human = HumanLabels.from_csv(spec, images.classes, ids=None)
    return human.aligned_to(images.ids)


def cifar10_train_pack() -> Path:
    """The shared CIFAR-10 training pack (50,000 JPEGs with hard labels); DataError when the folder is absent."""
    shared = shared_data_dir()
    if shared is None:
        raise DataError("the CIFAR-10 training pack lives in ../shared/data (or $TEAMING_DATA), which is absent")
    return shared / "cifar10_train_jpeg.npz"
