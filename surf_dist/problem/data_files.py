"""The files of the pixel datasets: idx (MNIST, Fashion-MNIST) and CIFAR-10 binary batches.

Writers (the tests make tiny files in these formats), parsers that check every header and size
and say what is wrong, and memory maps of intact uncompressed files (``pixel_rows.py`` reads
their rows on demand). Nothing is ever unpickled.
"""
from __future__ import annotations

import gzip
import zlib
import math
import os
from pathlib import Path

import numpy as np

IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801
CIFAR10_NUM_CLASSES = 10
CIFAR10_PIXELS = 3 * 32 * 32
CIFAR10_RECORD_BYTES = 1 + CIFAR10_PIXELS


# --------------------------------------------------------------------------- writers


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write a uint8 array in idx format (gzipped if ``path`` ends in ``.gz``).

    ``array`` is ``(n,)`` labels (magic 0x801) or ``(n, rows, cols)`` images
    (magic 0x803). Returns the path written.
    """
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"write_idx needs a uint8 array, got dtype {array.dtype}")
    if array.ndim not in (1, 3):
        raise ValueError(f"write_idx needs a 1-D (labels) or 3-D (images) array, got shape {array.shape}")
    magic = IDX_LABELS_MAGIC if array.ndim == 1 else IDX_IMAGES_MAGIC
    header = np.array([magic, *array.shape], dtype=">u4").tobytes()
    payload = header + np.ascontiguousarray(array).tobytes()
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wb") as handle:
        handle.write(payload)
    return path


def write_cifar10_batch(path: str | os.PathLike, images: np.ndarray, labels: np.ndarray) -> Path:
    """Write a CIFAR-10 binary batch: ``(n, 3072)`` uint8 images, ``(n,)`` labels in [0, 10).

    Returns the path written.
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != CIFAR10_PIXELS:
        raise ValueError(f"images must be uint8 of shape (n, {CIFAR10_PIXELS}), got {images.dtype} {images.shape}")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels must have shape ({images.shape[0]},), got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= CIFAR10_NUM_CLASSES):
        raise ValueError(f"CIFAR-10 labels must lie in [0, {CIFAR10_NUM_CLASSES}), got {labels.min()}..{labels.max()}")
    records = np.concatenate([labels.astype(np.uint8)[:, None], images], axis=1)
    path = Path(path)
    path.write_bytes(records.tobytes())
    return path


# --------------------------------------------------------------------------- parsing


def _read_file_bytes(path: Path) -> bytes:
    """Return the (decompressed if ``.gz``) content of ``path``."""
    if not path.name.endswith(".gz"):
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as handle:
            return handle.read()
    except (OSError, EOFError, zlib.error) as error:    # zlib.error: a damaged stream (issue 25)
        raise ValueError(f"{path}: not a valid gzip file ({error}); download it again") from None


def parse_idx(raw: bytes, expected_magic: int, source: str) -> np.ndarray:
    """Parse idx bytes into a uint8 array of the shape given by the header.

    ``source`` names the file in error messages.
    """
    if len(raw) < 4:
        raise ValueError(f"{source}: file is truncated ({len(raw)} bytes, no idx header)")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected_magic:
        raise ValueError(f"{source}: bad magic number 0x{magic:08x}, expected 0x{expected_magic:08x}")
    ndim = expected_magic & 0xFF
    header_bytes = 4 + 4 * ndim
    if len(raw) < header_bytes:
        raise ValueError(f"{source}: file is truncated ({len(raw)} bytes, header needs {header_bytes})")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected_size = header_bytes + math.prod(dims)   # Python ints: no overflow on a crafted header
    if len(raw) != expected_size:
        problem = "truncated" if len(raw) < expected_size else "too long"
        raise ValueError(f"{source}: file is {problem}: {len(raw)} bytes, header dims {dims} need {expected_size}")
    if not math.prod(dims):
        raise ValueError(f"{source}: the file holds no samples (header dims {dims}); download it again")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_bytes).reshape(dims)


def map_idx(path: Path, magic: int) -> np.ndarray:
    """An idx file's array, memory-mapped where the file is plain and intact (``parse_idx``
    reads and checks it otherwise, with its messages)."""
    ndim = magic & 0xFF
    header_bytes = 4 + 4 * ndim
    if not path.name.endswith(".gz"):
        with open(path, "rb") as handle:
            head = handle.read(header_bytes)
        if len(head) == header_bytes and int.from_bytes(head[:4], "big") == magic:
            dims = tuple(int(d) for d in np.frombuffer(head, dtype=">u4", count=ndim, offset=4))
            if math.prod(dims) and path.stat().st_size == header_bytes + math.prod(dims):
                return np.memmap(path, dtype=np.uint8, mode="r", offset=header_bytes, shape=dims)
    return parse_idx(_read_file_bytes(path), magic, str(path))


def parse_cifar10_batch(raw: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Parse a CIFAR-10 binary batch -> ``(n, 3072)`` uint8 pixels, ``(n,)`` uint8 labels."""
    if len(raw) % CIFAR10_RECORD_BYTES != 0:
        raise ValueError(
            f"{source}: size {len(raw)} bytes is not a multiple of the {CIFAR10_RECORD_BYTES}-byte "
            "CIFAR-10 record (truncated or not a CIFAR-10 binary batch)"
        )
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, CIFAR10_RECORD_BYTES)
    labels, pixels = records[:, 0], records[:, 1:]
    if labels.size and labels.max() >= CIFAR10_NUM_CLASSES:
        bad_record = int(np.argmax(labels >= CIFAR10_NUM_CLASSES))
        raise ValueError(
            f"{source}: record {bad_record} has label {labels[bad_record]}, out of range [0, {CIFAR10_NUM_CLASSES})"
        )
    return pixels, labels


def map_cifar10_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A CIFAR-10 batch's pixels memory-mapped (``(n, 3072)`` uint8) and its labels, where the
    file is intact (``parse_cifar10_batch`` reads and checks it otherwise, with its messages)."""
    size = path.stat().st_size
    if size and size % CIFAR10_RECORD_BYTES == 0:
        records = np.memmap(path, dtype=np.uint8, mode="r", shape=(size // CIFAR10_RECORD_BYTES, CIFAR10_RECORD_BYTES))
        labels = np.array(records[:, 0])
        if labels.max() < CIFAR10_NUM_CLASSES:
            return records[:, 1:], labels
    return parse_cifar10_batch(path.read_bytes(), str(path))
