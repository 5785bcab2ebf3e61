"""Image sets in every format the library reads, item selections, and the pack reader under threads."""

import io
import pickle
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

from teaming._validation import DataError
from teaming.data import (
    ImageSet,
    load_image_folder,
    load_jpeg_pack,
    load_torchvision_cifar10,
    pack_jpegs,
)
from teaming.datasets import DEFAULT_PACK, load_images
from teaming.decode import decode_image
from teaming.items import parse_items


def test_default_pack_decodes_all_items_with_stable_ids(cifar_test):
    assert cifar_test.images.shape == (10000, 3, 32, 32)
    assert cifar_test.images.dtype == torch.uint8
    assert cifar_test.ids[0] == "cifar10_test/0" and cifar_test.ids[9999] == "cifar10_test/9999"
    assert cifar_test.classes[0] == "airplane" and len(cifar_test.classes) == 10
    assert np.bincount(cifar_test.labels).tolist() == [1000] * 10
    # the pixels are real images, not blank decodes
    assert 80 < cifar_test.images.float().mean() < 160


def test_subset_keeps_ids_labels_and_pixels_aligned(cifar_test):
    sub = cifar_test.subset([5, 2])
    assert sub.ids == ["cifar10_test/5", "cifar10_test/2"]
    assert sub.labels.tolist() == [cifar_test.labels[5], cifar_test.labels[2]]
    assert torch.equal(sub.images[1], cifar_test.images[2])
    assert cifar_test.index_of(["cifar10_test/2", "cifar10_test/5"]).tolist() == [2, 5]


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_image_folder_resizes_any_size_and_labels_by_folder(tmp_path, cifar_test):
    for name, size in [("cat", 64), ("dog", 17)]:
        (tmp_path / name).mkdir()
        for i in range(3):
            img = np.random.default_rng(i).integers(0, 255, (size, size + 5, 3), dtype=np.uint8)
            (tmp_path / name / f"{i}.png").write_bytes(_png(img))
    (tmp_path / "cat" / "notes.txt").write_text("ignored")
    ds = load_image_folder(tmp_path, 32)
    assert ds.images.shape == (6, 3, 32, 32)
    assert ds.classes == ["cat", "dog"]
    assert sorted(ds.labels.tolist()) == [0, 0, 0, 1, 1, 1]  # in stratified shuffled order
    assert all(i.split("/")[0] == ds.classes[label] for i, label in zip(ds.ids, ds.labels))
    fixed = load_images(tmp_path, 32, classes=["ant", "cat", "dog"])  # a model's class order; 'ant' has no folder
    assert fixed.classes == ["ant", "cat", "dog"] and sorted(fixed.labels.tolist()) == [1, 1, 1, 2, 2, 2]


def test_image_folder_rejects_unknown_class_names(tmp_path):
    (tmp_path / "zebra").mkdir()
    (tmp_path / "zebra" / "a.png").write_bytes(_png(np.zeros((8, 8, 3), np.uint8)))
    with pytest.raises(DataError, match="unknown class names \\['zebra'\\]"):
        load_image_folder(tmp_path, classes=["cat", "dog"])


def test_image_folder_names_the_image_that_fails_to_decode(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(DataError, match="cat/broken.jpg: cannot decode"):
        load_image_folder(tmp_path)


def test_empty_inputs_are_rejected(tmp_path):
    (tmp_path / "cat").mkdir()
    with pytest.raises(DataError, match="no images found"):
        load_image_folder(tmp_path)
    with pytest.raises(DataError, match="zero bytes"):
        decode_image(b"")
    with pytest.raises(DataError, match="empty image set"):
        ImageSet(torch.zeros(0, 3, 32, 32, dtype=torch.uint8), [], ["a"])


def test_truncated_jpeg_in_pack_names_the_item(tmp_path, cifar_test):
    src = np.load(DEFAULT_PACK)
    off = src["offsets"][:4]
    jpeg = src["jpeg"][: off[-1]].copy()
    jpeg[off[1] : off[1] + 40] = 0  # wipe the header of item 1
    np.savez(tmp_path / "bad_jpeg.npz", jpeg=jpeg, offsets=off, labels=src["labels"][:3], classes=src["classes"])
    with pytest.raises(DataError, match="bad/1: cannot decode"):
        load_jpeg_pack(tmp_path / "bad_jpeg.npz")


def test_label_ids_out_of_range_and_mismatched_lengths():
    imgs = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(DataError, match="label id 3 of item b is out of range 0..1"):
        ImageSet(imgs, ["a", "b"], ["x", "y"], np.array([0, 3]))
    with pytest.raises(DataError, match="1 labels for 2 images"):
        ImageSet(imgs, ["a", "b"], ["x", "y"], np.array([0]))
    with pytest.raises(DataError, match="2 images but 3 ids"):
        ImageSet(imgs, ["a", "b", "c"], ["x", "y"])
    with pytest.raises(DataError, match="have no image"):
        ImageSet(imgs, ["a", "b"], ["x", "y"]).index_of(["a", "zzz"])


def test_torchvision_cifar10_folder_round_trips_pixels(tmp_path, cifar_test):
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    sub = cifar_test.subset(slice(0, 20))
    flat = sub.images.numpy().reshape(20, -1)
    with open(base / "test_batch", "wb") as fh:
        pickle.dump({"data": flat, "labels": sub.labels.tolist()}, fh)
    with open(base / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": sub.classes}, fh)
    ds = load_images(tmp_path)
    assert torch.equal(ds.images, sub.images)
    assert ds.labels.tolist() == sub.labels.tolist()
    assert ds.ids[3] == "cifar10_test/3"
    with pytest.raises(DataError, match="not a torchvision CIFAR-10 folder"):
        load_torchvision_cifar10(tmp_path, train=True)


def test_shared_train_pack_has_50000_images(shared_dir):
    ds = load_jpeg_pack(shared_dir / "cifar10_train_jpeg.npz")
    assert len(ds) == 50000 and ds.ids[-1] == "cifar10_train/49999"


def test_pack_jpegs_reads_each_pack_once_and_is_thread_safe(tmp_path):
    """Tests and benches fetch pack bytes from many threads at once; every thread gets the right bytes."""
    with np.load(DEFAULT_PACK) as src:
        off, jpeg = src["offsets"][:65], src["jpeg"]
        np.savez(tmp_path / "pack.npz", jpeg=jpeg[: off[-1]], offsets=off)
        expected = [jpeg[off[i] : off[i + 1]].tobytes() for i in range(64)]
    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(lambda i: pack_jpegs([i], tmp_path / "pack.npz")[0], range(64)))
    assert got == expected and all(b[:2] == b"\xff\xd8" for b in got)
    assert pack_jpegs([3, 1], tmp_path / "pack.npz") == [expected[3], expected[1]]


def test_parse_items_reads_slices_and_lists():
    assert parse_items("7:10", 20).tolist() == [7, 8, 9] and parse_items("3,1", 5).tolist() == [3, 1]
    assert parse_items(None, 3).tolist() == [0, 1, 2] and parse_items("all", 2).tolist() == [0, 1]
    with pytest.raises(DataError, match="START:STOP"):
        parse_items("a:b", 5)
    with pytest.raises(DataError, match="select nothing valid"):
        parse_items("5:9", 5)


def test_stratified_order_spreads_every_class_over_any_range():
    from teaming.data import stratified_order

    labels = np.repeat(np.arange(5), 200)  # sorted by class, as an ImageFolder's folders are
    order = stratified_order(labels)
    assert sorted(order.tolist()) == list(range(1000))
    for a, b in ((0, 800), (800, 1000)):
        counts = np.bincount(labels[order[a:b]], minlength=5)
        assert counts.min() >= 0.9 * (b - a) / 5, counts
    assert (stratified_order(labels) == order).all()  # seeded
