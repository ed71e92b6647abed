"""The features of a dataset read from files stay on the driver's host; a Ray rank receives the
rows of its own agents only.

A rank draws its tasks from the dataset's labels (every rank needs all of them: the pools and
every agent's shard are drawn from them, the same way on every backend), but it gathers the
features of its own agents' samples only: their seen and held-out samples, and its share of each
task's pooled held-out set (``problem.tasks.materialize``). So the ranks receive the labels and
the features' shape (``RemoteRows`` in place of the features); the features stay with a
``RowServer``, an actor on the driver's node (no CPU) holding the dataset the driver read, and a
rank's ``features[idx]`` asks it for exactly the rows of ``idx``, computed as the local backend
computes them (the same ``Dataset``), so the numbers are the same.
"""
from __future__ import annotations

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy


@ray.remote
class RowServer:
    """The file datasets of a job as the driver read them ({key: Dataset}), on its node."""

    def __init__(self, datasets: dict):
        self.datasets = datasets

    def rows(self, key, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` (k,) of dataset ``key``'s features: (k, num_features) float64."""
        return np.asarray(self.datasets[key].features[idx])


class RemoteRows:
    """A rank's stand-in for a dataset's ``(n, d)`` features: ``rows[idx]`` (an integer index
    array of any shape) asks the server for the rows of ``idx`` this rank was not sent yet (one
    call) and keeps them: a rank gathers the same tasks' shards again and again (validation,
    tuning, evaluation), and its agents' rows are what it holds anyway. ``received()``: the
    sorted indices of every row this rank was sent, each once."""

    ndim = 2
    dtype = np.dtype(np.float64)

    def __init__(self, server, key, shape: tuple[int, int]):
        self.server, self.key, self.shape = server, key, tuple(shape)
        self.have = np.zeros(0, dtype=np.int64)              # sorted row indices held
        self.rows = np.zeros((0, self.shape[1]))              # their features, in that order

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "have": np.zeros(0, dtype=np.int64), "rows": np.zeros((0, self.shape[1]))}

    def __getitem__(self, idx) -> np.ndarray:
        idx = np.asarray(idx)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"the rows of a dataset on the driver's host are read by integer index arrays, got {idx.dtype}")
        flat = idx.reshape(-1).astype(np.int64) % max(self.shape[0], 1)
        missing = np.setdiff1d(flat, self.have)
        if missing.size:
            fetched = ray.get(self.server.rows.remote(self.key, missing))
            order = np.argsort(np.concatenate([self.have, missing]), kind="stable")
            self.have = np.concatenate([self.have, missing])[order]
            self.rows = np.concatenate([self.rows, fetched])[order]
        return self.rows[np.searchsorted(self.have, flat)].reshape(*idx.shape, self.shape[1])

    def received(self) -> np.ndarray:
        return self.have


def serve_rows(inputs, node_id: str):
    """(the task inputs to send the ranks: each file dataset's features replaced by
    ``RemoteRows``, [the server] or []) for the ``job_files.TaskInputs`` the driver read; the
    server runs on the driver's node (``node_id``) and holds what the driver read."""
    if not inputs.datasets:
        return inputs, []
    server = RowServer.options(num_cpus=0, max_restarts=0,
                               scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)
                               ).remote(inputs.datasets)
    return inputs.with_features(lambda key, data: RemoteRows(server, key, data.features.shape)), [server]
