"""Tests for surf_dist.problem.datasets: bundled sets, idx / CIFAR-10 parsing, errors, pool splits."""

from __future__ import annotations

import ast
import gzip
from pathlib import Path

import numpy as np
import pytest

from surf_dist.problem import datasets
from surf_dist.problem.datasets import (
    CIFAR10_FILES,
    DATASETS,
    MNIST_FILES,
    Dataset,
    load_dataset,
    split_pools,
)
from surf_dist.problem.data_files import write_cifar10_batch, write_idx


# --------------------------------------------------------------------------- fixtures


def _mnist_arrays(num_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random ``(n, 28, 28)`` uint8 images with distinct first pixels, ``(n,)`` labels cycling 0..9."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(num_samples, 28, 28), dtype=np.uint8)
    images[:, 0, 0] = np.arange(num_samples, dtype=np.uint8) * 7 + seed  # a per-sample marker
    labels = ((np.arange(num_samples) + seed) % 10).astype(np.uint8)
    return images, labels


def _write_mnist_folder(folder: Path, gz: bool, num_train: int = 12, num_test: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Write the four idx files into ``folder``; return the concatenated (images, labels) written."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    train_x, train_y = _mnist_arrays(num_train, seed=1)
    test_x, test_y = _mnist_arrays(num_test, seed=2)
    for name, array in zip(MNIST_FILES, (train_x, train_y, test_x, test_y)):
        write_idx(folder / f"{name}{suffix}", array)
    return np.concatenate([train_x, test_x]), np.concatenate([train_y, test_y])


def _write_cifar_folder(folder: Path, records_per_file: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Write the six CIFAR-10 binary batches into ``folder``; return concatenated (pixels, labels)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    all_pixels, all_labels = [], []
    for file_index, name in enumerate(CIFAR10_FILES):
        pixels = rng.integers(0, 256, size=(records_per_file, 3072), dtype=np.uint8)
        pixels[:, 0] = file_index * records_per_file + np.arange(records_per_file)  # ordering marker
        labels = (np.arange(records_per_file) + file_index) % 10
        write_cifar10_batch(folder / name, pixels, labels)
        all_pixels.append(pixels)
        all_labels.append(labels)
    return np.concatenate(all_pixels), np.concatenate(all_labels)


def _assert_standardised(features: np.ndarray) -> None:
    """Columns have mean ~0 and std ~1 (or are all 0 when constant); pixel sets read every row."""
    assert features.dtype == np.float64
    features = np.asarray(features)
    std = features.std(axis=0)
    np.testing.assert_allclose(features.mean(axis=0), 0.0, atol=1e-9)
    non_constant = std > 1e-12
    np.testing.assert_allclose(std[non_constant], 1.0, atol=1e-9)
    assert np.all(features[:, ~non_constant] == 0.0)


def _assert_same_order(features_column: np.ndarray, raw_column: np.ndarray) -> None:
    """A standardised column is a positive affine map of the raw one: same ordering, same relative gaps."""
    raw = raw_column.astype(np.float64)
    expected = (raw - raw.mean()) / raw.std()
    np.testing.assert_allclose(features_column, expected, atol=1e-9)


# --------------------------------------------------------------------------- bundled sets


def test_digits_shape_classes_and_standardised() -> None:
    dataset = load_dataset("digits")
    assert isinstance(dataset, Dataset)
    assert dataset.name == "digits"
    assert dataset.features.shape == (1797, 64)
    assert (dataset.num_samples, dataset.num_features) == (1797, 64)
    assert dataset.num_classes == 10
    assert dataset.labels.dtype == np.int64
    assert set(np.unique(dataset.labels)) == set(range(10))
    _assert_standardised(dataset.features)
    assert np.any(dataset.features.std(axis=0) < 1e-12)  # digits has constant (blank) pixels


@pytest.mark.parametrize("name, shape, num_classes", [
    ("wine", (178, 13), 3), ("breast_cancer", (569, 30), 2), ("iris", (150, 4), 3),
])
def test_other_bundled_sets(name: str, shape: tuple[int, int], num_classes: int) -> None:
    dataset = load_dataset(name)
    assert dataset.features.shape == shape
    assert dataset.num_classes == num_classes
    _assert_standardised(dataset.features)


def test_dataset_is_frozen() -> None:
    dataset = load_dataset("iris")
    with pytest.raises(AttributeError):
        dataset.name = "other"  # type: ignore[misc]


def test_max_samples_is_deterministic_and_stratified() -> None:
    full = load_dataset("digits")
    first = load_dataset("digits", max_samples=200)
    second = load_dataset("digits", max_samples=200)
    assert first.num_samples == 200
    np.testing.assert_array_equal(first.labels, second.labels)
    np.testing.assert_array_equal(first.features, second.features)
    _assert_standardised(first.features)
    expected_share = np.bincount(full.labels, minlength=10) / full.num_samples * 200
    assert np.all(np.abs(np.bincount(first.labels, minlength=10) - expected_share) <= 1.0)
    assert load_dataset("iris", max_samples=10_000).num_samples == 150


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_max_samples_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match="max_samples"):
        load_dataset("iris", max_samples=bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- MNIST format


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_round_trip(tmp_path: Path, gz: bool) -> None:
    images, labels = _write_mnist_folder(tmp_path, gz=gz)
    dataset = load_dataset("mnist", root=tmp_path)
    assert dataset.name == "mnist"
    assert dataset.features.shape == (17, 784)
    assert dataset.num_classes == 10
    np.testing.assert_array_equal(dataset.labels, labels.astype(np.int64))
    flat = images.reshape(17, 784)
    for column in (0, 1, 400, 783):  # pixel content and sample order survive standardisation
        _assert_same_order(dataset.features[:, column], flat[:, column])
    _assert_standardised(dataset.features)


@pytest.mark.parametrize("max_samples", [None, 25])
def test_pixel_rows_are_read_on_demand_and_equal_the_whole_matrix_standardised(tmp_path, max_samples):
    """Plain idx files are memory-mapped (nothing of them in the process's own memory); the
    rows asked for, in any order and shape, equal those of the whole matrix standardised."""
    from surf_dist.problem.datasets import standardise, stratified_subsample
    images, labels = _write_mnist_folder(tmp_path, gz=False, num_train=40, num_test=10)
    dataset = load_dataset("mnist", root=tmp_path, max_samples=max_samples)
    assert dataset.features.resident_bytes() == 0
    flat = images.reshape(len(images), -1).astype(np.float64) / 255.0
    if max_samples:
        flat = flat[stratified_subsample(labels, max_samples)]
    whole = standardise(flat)
    idx = np.array([[3, 0, 3], [len(whole) - 1, 7, 1]])
    np.testing.assert_allclose(dataset.features[idx], whole[idx], rtol=0, atol=1e-12)
    assert dataset.features[idx].shape == (2, 3, 784)


def test_fashion_mnist_and_max_samples(tmp_path: Path) -> None:
    _, labels = _write_mnist_folder(tmp_path, gz=True, num_train=40, num_test=10)
    dataset = load_dataset("fashion_mnist", root=str(tmp_path))
    assert dataset.name == "fashion_mnist"
    np.testing.assert_array_equal(dataset.labels, labels)
    small = load_dataset("fashion_mnist", root=tmp_path, max_samples=20)
    assert small.features.shape == (20, 784)
    np.testing.assert_array_equal(np.bincount(small.labels, minlength=10), np.full(10, 2))


def test_plain_file_preferred_over_gz(tmp_path: Path) -> None:
    _write_mnist_folder(tmp_path, gz=False)
    (tmp_path / f"{MNIST_FILES[1]}.gz").write_bytes(b"not gzip at all")
    assert load_dataset("mnist", root=tmp_path).num_samples == 17


# --------------------------------------------------------------------------- CIFAR-10


@pytest.mark.parametrize("in_subfolder", [False, True])
def test_cifar10_round_trip(tmp_path: Path, in_subfolder: bool) -> None:
    folder = tmp_path / "cifar-10-batches-bin" if in_subfolder else tmp_path
    pixels, labels = _write_cifar_folder(folder)
    dataset = load_dataset("cifar10", root=tmp_path)
    assert dataset.features.shape == (30, 3072)
    assert dataset.num_classes == 10
    np.testing.assert_array_equal(dataset.labels, labels)
    for column in (0, 1, 1024, 3071):
        _assert_same_order(dataset.features[:, column], pixels[:, column])


def test_cifar10_accepts_any_whole_number_of_records(tmp_path: Path) -> None:
    _write_cifar_folder(tmp_path, records_per_file=2)
    write_cifar10_batch(tmp_path / "test_batch.bin", np.zeros((7, 3072), np.uint8), np.arange(7))
    assert load_dataset("cifar10", root=tmp_path).num_samples == 5 * 2 + 7


# --------------------------------------------------------------------------- errors


def test_unknown_name_lists_datasets() -> None:
    with pytest.raises(ValueError) as info:
        load_dataset("imagenet")
    for name in DATASETS:
        assert name in str(info.value)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_root_none_asks_for_data_root(name: str) -> None:
    with pytest.raises(ValueError, match="--data-root"):
        load_dataset(name)


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_missing_folder(tmp_path: Path, name: str) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as info:
        load_dataset(name, root=missing)
    message = str(info.value)
    assert name in message and str(missing) in message
    expected = MNIST_FILES if name == "mnist" else CIFAR10_FILES
    assert all(file_name in message for file_name in expected)


def test_missing_mnist_file_lists_expected_names(tmp_path: Path) -> None:
    _write_mnist_folder(tmp_path, gz=False)
    (tmp_path / MNIST_FILES[2]).unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("mnist", root=tmp_path)
    message = str(info.value)
    assert "mnist" in message and str(tmp_path) in message
    assert all(file_name in message for file_name in MNIST_FILES)


def test_missing_cifar_file_lists_expected_names(tmp_path: Path) -> None:
    _write_cifar_folder(tmp_path)
    (tmp_path / "data_batch_3.bin").unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("cifar10", root=tmp_path)
    message = str(info.value)
    assert "cifar10" in message and str(tmp_path) in message
    assert all(file_name in message for file_name in CIFAR10_FILES)


def test_bad_magic_number(tmp_path: Path) -> None:
    _write_mnist_folder(tmp_path, gz=False)
    path = tmp_path / MNIST_FILES[0]
    raw = bytearray(path.read_bytes())
    raw[3] = 0x01  # images file now claims to be a labels file
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="magic") as info:
        load_dataset("mnist", root=tmp_path)
    assert MNIST_FILES[0] in str(info.value)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_idx_file(tmp_path: Path, gz: bool) -> None:
    _write_mnist_folder(tmp_path, gz=gz)
    path = tmp_path / (MNIST_FILES[2] + (".gz" if gz else ""))
    raw = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
    truncated = raw[:-100]
    path.write_bytes(gzip.compress(truncated) if gz else truncated)
    with pytest.raises(ValueError, match="truncated") as info:
        load_dataset("mnist", root=tmp_path)
    assert MNIST_FILES[2] in str(info.value)


def test_corrupt_gzip(tmp_path: Path) -> None:
    _write_mnist_folder(tmp_path, gz=True)
    path = tmp_path / f"{MNIST_FILES[1]}.gz"
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(ValueError, match=MNIST_FILES[1]):
        load_dataset("mnist", root=tmp_path)


def test_image_label_count_mismatch(tmp_path: Path) -> None:
    _write_mnist_folder(tmp_path, gz=False)
    write_idx(tmp_path / MNIST_FILES[1], np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="12 images but .* 3 labels"):
        load_dataset("mnist", root=tmp_path)


def test_wrong_image_dims(tmp_path: Path) -> None:
    _write_mnist_folder(tmp_path, gz=False)
    write_idx(tmp_path / MNIST_FILES[0], np.zeros((12, 20, 20), np.uint8))
    with pytest.raises(ValueError, match="28x28"):
        load_dataset("mnist", root=tmp_path)


def test_mnist_label_out_of_range(tmp_path: Path) -> None:
    _write_mnist_folder(tmp_path, gz=False)
    labels = np.zeros(5, np.uint8)
    labels[2] = 12
    write_idx(tmp_path / MNIST_FILES[3], labels)
    with pytest.raises(ValueError, match="out of range") as info:
        load_dataset("mnist", root=tmp_path)
    assert MNIST_FILES[3] in str(info.value)


def test_cifar_size_not_multiple_of_record(tmp_path: Path) -> None:
    _write_cifar_folder(tmp_path)
    path = tmp_path / "data_batch_2.bin"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match="3073") as info:
        load_dataset("cifar10", root=tmp_path)
    assert "data_batch_2.bin" in str(info.value)


def test_cifar_label_out_of_range(tmp_path: Path) -> None:
    _write_cifar_folder(tmp_path)
    path = tmp_path / "test_batch.bin"
    raw = bytearray(path.read_bytes())
    raw[3073] = 10  # label byte of record 1
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="out of range") as info:
        load_dataset("cifar10", root=tmp_path)
    assert "test_batch.bin" in str(info.value)


def test_writers_reject_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uint8"):
        write_idx(tmp_path / "x", np.zeros(3, np.int32))
    with pytest.raises(ValueError, match="1-D"):
        write_idx(tmp_path / "x", np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="labels"):
        write_cifar10_batch(tmp_path / "y", np.zeros((2, 3072), np.uint8), np.array([0, 10]))


def test_module_never_imports_pickle() -> None:
    source = Path(datasets.__file__).read_text()
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
            imported.update(alias.name for alias in node.names)
    assert not any("pickle" in name for name in imported), imported
    assert "allow_pickle" not in source
    assert "np.load(" not in source


# --------------------------------------------------------------------------- split_pools


def _imbalanced_labels() -> np.ndarray:
    """``(n,)`` labels with classes of very different sizes, shuffled."""
    labels = np.repeat(np.arange(5), [50, 23, 7, 3, 1])
    return np.random.default_rng(3).permutation(labels)


@pytest.mark.parametrize("fractions", [(0.6, 0.2, 0.2), (0.5, 0.3, 0.2), (0.8, 0.1, 0.1)])
def test_split_pools_disjoint_covering_stratified(fractions: tuple[float, float, float]) -> None:
    labels = _imbalanced_labels()
    pools = split_pools(labels, fractions=fractions, seed=5)
    joined = np.concatenate(pools)
    assert joined.size == labels.size
    np.testing.assert_array_equal(np.sort(joined), np.arange(labels.size))  # disjoint and covering
    for pool in pools:
        assert pool.dtype == np.int64
    for label in np.unique(labels):
        class_size = int(np.sum(labels == label))
        for pool, fraction in zip(pools, fractions):
            assert abs(int(np.sum(labels[pool] == label)) - fraction * class_size) <= 1.0


def test_split_pools_deterministic_in_seed() -> None:
    labels = load_dataset("digits").labels
    first = split_pools(labels, seed=11)
    second = split_pools(labels, seed=11)
    other = split_pools(labels, seed=12)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


@pytest.mark.parametrize("fractions", [(0.5, 0.5, 0.0), (0.7, 0.2, 0.2), (0.6, 0.4), (1.2, -0.1, -0.1), (0.5, float("nan"), 0.5)])
def test_split_pools_rejects_bad_fractions(fractions: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="fractions"):
        split_pools(np.zeros(10, np.int64), fractions=fractions)  # type: ignore[arg-type]


def test_split_pools_rejects_non_1d_labels() -> None:
    with pytest.raises(ValueError, match="1-D"):
        split_pools(np.zeros((4, 2), np.int64))


def test_every_dataset_has_its_shape_known_before_loading() -> None:
    """The size checks read ``SHAPES`` before anything loads (``--preset large`` once failed here)."""
    from surf_dist.problem.datasets import SHAPES
    assert set(SHAPES) == set(DATASETS)
    for name in ("digits", "synthetic64"):
        data = load_dataset(name)
        assert SHAPES[name] == (data.num_features, data.num_classes, data.num_samples)


def test_random_conv_features_ignore_where_a_pattern_sits():
    """Max over positions: a pattern moved inside a zero signal gives the same features; another
    pattern other features; the filters depend on the seed only (fitted on no data)."""
    from surf_dist.problem.datasets import random_conv_features
    base = np.zeros((3, 40))
    pattern = np.sin(np.arange(12))
    base[0, 8:20], base[1, 20:32] = pattern, pattern     # at least 8 zeros on each side
    base[2, 8:20] = pattern[::-1]
    f = random_conv_features(base)
    assert f.shape == (3, 64)
    assert np.allclose(f[0], f[1]) and not np.allclose(f[0], f[2])
    assert np.array_equal(random_conv_features(base), f)


def test_mnist1d_is_generated_offline_and_fits_a_softmax():
    pytest.importorskip("mnist1d")
    from sklearn.linear_model import LogisticRegression

    from surf_dist.problem.datasets import _load_mnist1d
    features, labels, classes = _load_mnist1d(1000)
    assert features.shape == (1000, 64) and classes == 10 and set(labels.tolist()) == set(range(10))
    x = (features - features[:800].mean(0)) / features[:800].std(0)
    score = LogisticRegression(max_iter=500).fit(x[:800], labels[:800]).score(x[800:], labels[800:])
    assert score > 0.6       # the raw 40-point signal gives ~0.34 (DESIGN.md section 1)
