"""Datasets for the simulator: loading, standardisation and pool splitting.

Every dataset is returned as a :class:`Dataset` holding float64 features
``(num_samples, num_features)`` and int64 labels ``(num_samples,)``: a dense matrix, or for the
pixel sets a ``PixelRows`` that reads and standardises the rows asked for from the files'
memory-mapped bytes (``pixel_rows.py``), so that a worker holds only its agents' rows.

Sources
-------
* ``digits`` (default), ``wine``, ``breast_cancer``, ``iris``: bundled with
  scikit-learn, no files needed.
* ``mnist``, ``fashion_mnist``: the four standard idx files (plain or ``.gz``)
  in a local folder; train and test files are concatenated (train first).
* ``synthetic512``: a seeded Gaussian mixture, 6,000 samples of 512 features in 10
  classes (class means ~N(0, I/4), unit noise): the size of the paper's CNN features
  (512-d), made on the spot, for speed and memory checks (``studies/gpu_check.py``).
* ``synthetic64``: a harder seeded Gaussian mixture, 200,000 samples of 64 features in 10
  classes (class means ~N(0, 0.35^2 I), unit noise: overlapping classes), so that tasks with
  many samples per agent draw from pools far larger than any task (``surf-dist bench
  --preset large``); 64 features keep d = 650, as on the digits.
* ``mnist1d``: MNIST-1D (the ``mnist1d`` package, Apache-2.0), 20,000 signals of 40 points in 10
  classes generated procedurally on the spot (``make_dataset``; its download path is never
  called), seed 42. A linear softmax on the raw signal reaches only ~0.34, so every signal goes
  through a fixed feature map fitted on no data at all: 64 random filters of width 9
  (seeded), ReLU, max over positions (shift-robust), then z-scored. 64 features keep d = 650,
  as on the digits. Needs ``pip install mnist1d`` (the ``mnist1d`` extra).
* ``cifar10``: the *binary* version (``data_batch_{1..5}.bin``,
  ``test_batch.bin``) in a local folder or its ``cifar-10-batches-bin``
  subfolder; each record is 1 label byte + 3072 pixel bytes (1024 red, 1024
  green, 1024 blue, row-major), kept in that channel-major order.

Nothing is ever downloaded and nothing is ever unpickled.

Standardisation
---------------
Pixel datasets (mnist, fashion_mnist, cifar10) are first scaled to [0, 1] by
dividing by 255. Then every dataset is z-scored per feature with its own mean
and standard deviation (computed on the samples actually returned, i.e. after
``max_samples`` sub-sampling): ``(x - mean) / std``. Features whose std is 0
are set to 0.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data_files import (CIFAR10_NUM_CLASSES, IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, _read_file_bytes,
                         map_cifar10_batch, map_idx, parse_idx)
from .pixel_rows import PixelRows

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "wine", "breast_cancer", "iris", "synthetic512", "synthetic64",
            "mnist1d")

SKLEARN_DATASETS = ("digits", "wine", "breast_cancer", "iris")
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
CIFAR10_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6)) + ("test_batch.bin",)
CIFAR10_SUBFOLDER = "cifar-10-batches-bin"

MNIST_IMAGE_SIDE = 28
MNIST_NUM_CLASSES = 10
SUBSAMPLE_SEED = 0


@dataclass(frozen=True)
class Dataset:
    """A labelled dataset.

    Attributes:
        name: canonical dataset name (one of ``DATASETS``).
        features: ``(num_samples, num_features)`` float64, standardised.
        labels: ``(num_samples,)`` int64 in ``[0, num_classes)``.
        num_classes: number of classes.
    """

    name: str
    features: np.ndarray | PixelRows      # PixelRows: pixel sets, rows standardised when read
    labels: np.ndarray
    num_classes: int

    @property
    def num_features(self) -> int:
        """Number of feature columns."""
        return int(self.features.shape[1])

    @property
    def num_samples(self) -> int:
        """Number of rows (samples)."""
        return int(self.features.shape[0])


def _find_idx_file(folder: Path, base_name: str, dataset: str) -> Path:
    """Return ``folder/base_name`` or ``folder/base_name.gz`` (plain preferred)."""
    for candidate in (folder / base_name, folder / f"{base_name}.gz"):
        if candidate.is_file():
            return candidate
    expected = ", ".join(f"{name}[.gz]" for name in MNIST_FILES)
    raise FileNotFoundError(
        f"dataset '{dataset}': missing file {base_name} (or {base_name}.gz) in {folder}; "
        f"expected the idx files: {expected}"
    )


def _load_idx_pair(folder: Path, images_name: str, labels_name: str, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """Load one images/labels idx pair -> ``(n, 784)`` uint8 images, ``(n,)`` uint8 labels."""
    images_path = _find_idx_file(folder, images_name, dataset)
    labels_path = _find_idx_file(folder, labels_name, dataset)
    images = map_idx(images_path, IDX_IMAGES_MAGIC)
    labels = parse_idx(_read_file_bytes(labels_path), IDX_LABELS_MAGIC, str(labels_path))
    if images.shape[1:] != (MNIST_IMAGE_SIDE, MNIST_IMAGE_SIDE):
        raise ValueError(
            f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, "
            f"expected {MNIST_IMAGE_SIDE}x{MNIST_IMAGE_SIDE}"
        )
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images_path} has {images.shape[0]} images but {labels_path} has {labels.shape[0]} labels")
    if labels.size and labels.max() >= MNIST_NUM_CLASSES:
        raise ValueError(f"{labels_path}: label {labels.max()} out of range [0, {MNIST_NUM_CLASSES})")
    return images.reshape(images.shape[0], -1), labels


def _require_folder(root: str | os.PathLike | None, dataset: str, expected_files: tuple[str, ...]) -> Path:
    """Validate ``root`` for a file-based dataset and return it as a Path."""
    if root is None:
        raise ValueError(
            f"dataset '{dataset}' is read from local files: pass --data-root (root=...) pointing to a folder "
            f"containing {', '.join(expected_files)}"
        )
    folder = Path(root)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"dataset '{dataset}': data root {folder} does not exist or is not a folder; "
            f"expected a folder containing {', '.join(expected_files)}"
        )
    return folder


def _load_mnist_like(dataset: str, root: str | os.PathLike | None) -> tuple[list[np.ndarray], np.ndarray]:
    """Load mnist / fashion_mnist -> [train, test] ``(n_i, 784)`` uint8 pixels (memory-mapped
    where plain), ``(n,)`` labels (train then test)."""
    folder = _require_folder(root, dataset, MNIST_FILES)
    train_x, train_y = _load_idx_pair(folder, MNIST_FILES[0], MNIST_FILES[1], dataset)
    test_x, test_y = _load_idx_pair(folder, MNIST_FILES[2], MNIST_FILES[3], dataset)
    return [train_x, test_x], np.concatenate([train_y, test_y])


def _locate_cifar10_folder(root: str | os.PathLike | None) -> Path:
    """Return the folder holding the CIFAR-10 batches: ``root`` or ``root/cifar-10-batches-bin``."""
    folder = _require_folder(root, "cifar10", CIFAR10_FILES)
    subfolder = folder / CIFAR10_SUBFOLDER
    for candidate in (folder, subfolder):
        if all((candidate / name).is_file() for name in CIFAR10_FILES):
            return candidate
    searched = subfolder if subfolder.is_dir() else folder
    missing = [name for name in CIFAR10_FILES if not (searched / name).is_file()]
    raise FileNotFoundError(
        f"dataset 'cifar10': missing {', '.join(missing)} in {searched} (looked in {folder} and {subfolder}); "
        f"expected the binary batches: {', '.join(CIFAR10_FILES)}"
    )


def _load_cifar10(root: str | os.PathLike | None) -> tuple[list[np.ndarray], np.ndarray]:
    """Load CIFAR-10 -> per batch ``(n_i, 3072)`` uint8 pixels (memory-mapped), ``(n,)`` labels
    (batches 1-5 then test)."""
    folder = _locate_cifar10_folder(root)
    batches = [map_cifar10_batch(folder / name) for name in CIFAR10_FILES]
    return [b[0] for b in batches], np.concatenate([b[1] for b in batches])


def _load_sklearn(name: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Load a scikit-learn bundled dataset -> ``(n, d)`` features, ``(n,)`` labels, num_classes."""
    from sklearn import datasets as sk_datasets  # imported lazily: slow to import

    loaders = {
        "digits": sk_datasets.load_digits,
        "wine": sk_datasets.load_wine,
        "breast_cancer": sk_datasets.load_breast_cancer,
        "iris": sk_datasets.load_iris,
    }
    bunch = loaders[name]()
    return np.asarray(bunch.data), np.asarray(bunch.target), len(bunch.target_names)


# --------------------------------------------------------------------------- transforms


def gaussian_mixture(num_samples: int, num_features: int, num_classes: int,
                     seed: int = SUBSAMPLE_SEED, mean_std: float = 0.5) -> tuple[np.ndarray, np.ndarray, int]:
    """Balanced labels; sample = its class mean (~N(0, mean_std^2 I), drawn once) + N(0, I) noise."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, mean_std, size=(num_classes, num_features))
    labels = np.arange(num_samples) % num_classes
    return means[labels] + rng.normal(size=(num_samples, num_features)), labels, num_classes


MNIST1D_SAMPLES, MNIST1D_FILTERS, MNIST1D_WIDTH = 20_000, 64, 9


def random_conv_features(signals: np.ndarray, num_filters: int = MNIST1D_FILTERS, width: int = MNIST1D_WIDTH,
                         seed: int = SUBSAMPLE_SEED) -> np.ndarray:
    """(n, length) signals -> (n, num_filters): max over positions of ReLU(window . filter),
    filters ~N(0, I / width) drawn once from ``seed`` (fitted on nothing: no split can leak)."""
    filters = np.random.default_rng(seed).normal(size=(num_filters, width)) / np.sqrt(width)
    windows = np.lib.stride_tricks.sliding_window_view(np.asarray(signals, dtype=np.float64), width, axis=1)
    out = np.empty((len(signals), num_filters))
    for i in range(0, len(signals), 4096):          # bounded memory: (4096, positions, filters) at a time
        out[i:i + 4096] = np.maximum(windows[i:i + 4096] @ filters.T, 0.0).max(axis=1)
    return out


def _load_mnist1d(num_samples: int = MNIST1D_SAMPLES) -> tuple[np.ndarray, np.ndarray, int]:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise ValueError("dataset 'mnist1d' needs the mnist1d package: pip install mnist1d "
                         "(or pip install 'surf-dist[mnist1d]')") from None
    args = get_dataset_args()
    args.num_samples, args.seed = num_samples, 42
    data = make_dataset(args)          # generated here; nothing is downloaded
    signals = np.concatenate([data["x"], data["x_test"]])
    labels = np.concatenate([data["y"], data["y_test"]]).astype(np.int64)
    return random_conv_features(signals), labels, 10


def standardise(features: np.ndarray) -> np.ndarray:
    """Z-score ``(n, d)`` features per column -> float64 ``(n, d)``; constant columns become 0."""
    features = np.asarray(features, dtype=np.float64)
    mean = features.mean(axis=0)
    std = features.std(axis=0)
    safe_std = np.where(std > 0, std, 1.0)
    return np.where(std > 0, (features - mean) / safe_std, 0.0)


def stratified_subsample(labels: np.ndarray, max_samples: int, seed: int = SUBSAMPLE_SEED) -> np.ndarray:
    """Pick ``min(max_samples, n)`` indices of ``(n,)`` labels, class proportions kept as far as possible.

    Deterministic in ``seed``; returns sorted indices ``(k,)``.
    """
    labels = np.asarray(labels)
    if max_samples >= labels.size:
        return np.arange(labels.size)
    order = np.random.default_rng(seed).permutation(labels.size)
    shuffled = labels[order]
    _, inverse, counts = np.unique(shuffled, return_inverse=True, return_counts=True)
    rank_in_class = np.empty(labels.size, dtype=np.int64)
    for class_index in range(counts.size):
        members = np.flatnonzero(inverse == class_index)
        rank_in_class[members] = np.arange(members.size)
    # Interleave classes by their relative progress: taking the first k gives
    # every class ~k * (class share) samples.
    progress = (rank_in_class + 0.5) / counts[inverse]
    chosen = order[np.argsort(progress, kind="stable")[:max_samples]]
    return np.sort(chosen)


def _validate_max_samples(max_samples: int | None) -> None:
    """Reject a non-positive or non-integer ``max_samples``."""
    if max_samples is None:
        return
    if isinstance(max_samples, bool) or not isinstance(max_samples, (int, np.integer)) or max_samples < 1:
        raise ValueError(f"max_samples must be a positive integer or None, got {max_samples!r}")


def load_dataset(name: str, root: str | os.PathLike | None = None, max_samples: int | None = None) -> Dataset:
    """Load dataset ``name`` (one of ``DATASETS``), standardised (see module docstring).

    ``root`` is the folder holding the files of mnist / fashion_mnist / cifar10
    (ignored for the scikit-learn sets). ``max_samples`` keeps a deterministic,
    class-stratified subset of that size (``None``: all samples).
    """
    canonical = canonical_name(name)
    _validate_max_samples(max_samples)
    if canonical in SKLEARN_DATASETS:
        raw_features, raw_labels, num_classes = _load_sklearn(canonical)
        is_pixels = False
    elif canonical == "synthetic512":
        raw_features, raw_labels, num_classes = gaussian_mixture(6000, 512, 10)
        is_pixels = False
    elif canonical == "synthetic64":
        raw_features, raw_labels, num_classes = gaussian_mixture(200_000, 64, 10, mean_std=0.35)
        is_pixels = False
    elif canonical == "mnist1d":
        raw_features, raw_labels, num_classes = _load_mnist1d()
        is_pixels = False
    elif canonical == "cifar10":
        raw_features, raw_labels = _load_cifar10(root)
        num_classes, is_pixels = CIFAR10_NUM_CLASSES, True
    else:
        raw_features, raw_labels = _load_mnist_like(canonical, root)
        num_classes, is_pixels = MNIST_NUM_CLASSES, True
    if raw_labels.size == 0:
        raise ValueError(f"dataset '{canonical}' has no samples (files under {root} are empty)")
    keep = None if max_samples is None else stratified_subsample(raw_labels, max_samples)
    labels = (raw_labels if keep is None else raw_labels[keep]).astype(np.int64)
    assert labels.min() >= 0 and labels.max() < num_classes
    if is_pixels:      # read on demand: a worker holds the rows its agents use (pixel_rows.py)
        return Dataset(name=canonical, features=PixelRows(raw_features, keep), labels=labels, num_classes=num_classes)
    features = raw_features if keep is None else raw_features[keep]
    return Dataset(name=canonical, features=standardise(features), labels=labels, num_classes=num_classes)


# The (features, classes, samples) of each dataset, known without reading it: the size checks
# and the "does this model fit that dataset" checks run before anything is loaded.
FILE_DATASETS = ("mnist", "fashion_mnist", "cifar10")      # read from files (--data-root); the others come with the package
SHAPES = {"digits": (64, 10, 1797), "wine": (13, 3, 178), "breast_cancer": (30, 2, 569), "iris": (4, 3, 150),
          "mnist": (784, 10, 70000), "fashion_mnist": (784, 10, 70000), "cifar10": (3072, 10, 60000),
          "synthetic512": (512, 10, 6000), "synthetic64": (64, 10, 200_000),
          "mnist1d": (MNIST1D_FILTERS, 10, MNIST1D_SAMPLES)}


def canonical_name(name) -> str:
    """``name`` as one of ``DATASETS`` (case and dashes ignored); else ValueError."""
    canonical = str(name).strip().lower().replace("-", "_")
    if canonical not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return canonical


def check_available(name: str, root: str | os.PathLike | None = None) -> tuple[int, int, int]:
    """The (features, classes, samples) of dataset ``name`` once its files are found, without
    reading them: a missing folder or file is an error here, a corrupt one when it is loaded."""
    canonical = canonical_name(name)
    if canonical in ("mnist", "fashion_mnist"):
        folder = _require_folder(root, canonical, MNIST_FILES)
        for base in MNIST_FILES:
            _find_idx_file(folder, base, canonical)
    elif canonical == "cifar10":
        _locate_cifar10_folder(root)
    return SHAPES[canonical]


# --------------------------------------------------------------------------- pools


def _validate_fractions(fractions: tuple[float, ...]) -> np.ndarray:
    """Return three positive fractions summing to 1 as an array ``(3,)``, else raise."""
    values = np.asarray(fractions, dtype=np.float64)
    if values.shape != (3,):
        raise ValueError(f"fractions must be three numbers (train, validation, test), got {fractions!r}")
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"fractions must all be positive, got {fractions!r}")
    if not np.isclose(values.sum(), 1.0, rtol=0.0, atol=1e-9):
        raise ValueError(f"fractions must sum to 1, got {fractions!r} (sum {values.sum():g})")
    return values


def _split_counts(total: int, fractions: np.ndarray) -> np.ndarray:
    """Split ``total`` into ``(3,)`` counts, each within 1 of ``total * fraction`` (largest remainder)."""
    exact = total * fractions
    counts = np.floor(exact).astype(np.int64)
    leftover = total - int(counts.sum())
    counts[np.argsort(-(exact - counts), kind="stable")[:leftover]] += 1
    assert counts.sum() == total
    return counts


def split_pools(
    labels: np.ndarray, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2), seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split sample indices into disjoint (train, validation, test) pools stratified by label.

    ``labels`` is ``(n,)``. Each class is shuffled (deterministically in ``seed``)
    and cut in ``fractions`` (each count within 1 of exact). Returns three sorted
    int64 index arrays that together cover ``range(n)`` exactly once.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be a 1-D array, got shape {labels.shape}")
    weights = _validate_fractions(fractions)
    rng = np.random.default_rng(seed)
    pools: tuple[list[np.ndarray], ...] = ([], [], [])
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        boundaries = np.cumsum(_split_counts(members.size, weights))[:-1]
        for pool, part in zip(pools, np.split(members, boundaries)):
            pool.append(part)
    train, validation, test = (np.sort(np.concatenate(pool)).astype(np.int64) for pool in pools)
    assert train.size + validation.size + test.size == labels.size
    return train, validation, test
