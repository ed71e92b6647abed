"""Pixel datasets read row by row, so that a worker holds only the rows its agents use.

MNIST, Fashion-MNIST and CIFAR-10 stay as their uint8 bytes, memory-mapped from the files where
those are uncompressed (``data_files.map_idx``, ``data_files.map_cifar10_batch``): one byte per
value instead of eight, and only the pages a worker reads come into its memory. ``rows[idx]``
scales to [0, 1] and z-scores just the rows asked for, with the per-feature mean and standard
deviation of the whole (sub-sampled) dataset, computed once in chunks.
"""
from __future__ import annotations

import numpy as np

CHUNK_ROWS = 4096


class PixelRows:
    """``(n, d)`` standardised float64 features, read on demand from uint8 ``parts`` (stacked
    in order; each a memmap or an array). ``keep``: sorted source rows of a sub-sample."""

    ndim = 2
    dtype = np.dtype(np.float64)

    def __init__(self, parts: list[np.ndarray], keep: np.ndarray | None = None, scale: float = 1 / 255):
        self.parts, self.scale = parts, scale
        self.starts = np.cumsum([0] + [len(p) for p in parts])
        self.keep = None if keep is None else np.asarray(keep, dtype=np.int64)
        n = int(self.starts[-1]) if keep is None else len(self.keep)
        self.shape = (n, int(parts[0].shape[1]))
        total = np.zeros(self.shape[1])
        for chunk in self._chunks():
            total += chunk.sum(0)
        self.col_mean = total / max(n, 1)
        spread = np.zeros(self.shape[1])
        for chunk in self._chunks():
            spread += ((chunk - self.col_mean) ** 2).sum(0)
        self.col_std = np.sqrt(spread / max(n, 1))
        self.safe_col_std = np.where(self.col_std > 0, self.col_std, 1.0)

    def __len__(self) -> int:
        return self.shape[0]

    def _scaled(self, rows: np.ndarray) -> np.ndarray:
        """Rows (sorted, unique) of the dataset, scaled, not yet standardised: (k, d)."""
        source = rows if self.keep is None else self.keep[rows]
        out = np.empty((len(source), self.shape[1]))
        part_of = np.searchsorted(self.starts, source, side="right") - 1
        for p in np.unique(part_of):
            mine = part_of == p
            out[mine] = self.parts[p][source[mine] - self.starts[p]]
        return out * self.scale

    def _chunks(self):
        for start in range(0, self.shape[0], CHUNK_ROWS):
            yield self._scaled(np.arange(start, min(start + CHUNK_ROWS, self.shape[0])))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """Every row (the whole matrix in memory: for checks on small sets, not for workers)."""
        return self[np.arange(self.shape[0])].astype(dtype or self.dtype, copy=False)

    def __getitem__(self, idx) -> np.ndarray:
        """Standardised rows for an integer index array of any shape: ``idx.shape + (d,)``;
        any other index (slices, columns) applies to the whole matrix."""
        if isinstance(idx, (slice, tuple)):
            return np.asarray(self)[idx]
        idx = np.asarray(idx, dtype=np.int64)
        if idx.size and (idx.min() < -self.shape[0] or idx.max() >= self.shape[0]):
            raise IndexError(f"row index out of range for {self.shape[0]} rows")
        rows, inverse = np.unique(idx.reshape(-1) % max(self.shape[0], 1), return_inverse=True)
        x = np.where(self.col_std > 0, (self._scaled(rows) - self.col_mean) / self.safe_col_std, 0.0)
        return x[inverse].reshape(*idx.shape, self.shape[1])

    def resident_bytes(self) -> int:
        """Bytes of the raw parts held in this process's own memory (a memmap holds none)."""
        return sum(0 if isinstance(p, np.memmap) else p.nbytes for p in self.parts)
