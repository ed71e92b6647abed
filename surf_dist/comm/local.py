"""The single-process reference: every agent in one block, S applied as a sparse product."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from .base import Communicator


def to_torch_sparse(matrix: sp.spmatrix, dtype=torch.float64) -> torch.Tensor:
    coo = matrix.tocoo()
    indices = torch.as_tensor(np.vstack([coo.row, coo.col]), dtype=torch.int64)
    return torch.sparse_coo_tensor(indices, torch.as_tensor(coo.data, dtype=dtype), coo.shape,
                                   check_invariants=False).coalesce()


class LocalCommunicator(Communicator):
    """All nodes hosted here; ``shift`` is ``S @ Z`` (autograd sends grad ``S^T @ dY``)."""

    def _bind(self, shift, nodes, node_lists=None):
        if len(nodes) != shift.shape[0]:
            raise ValueError("the local backend hosts every node of the graph")
        self._matrix = {}
        self._shift_csr = shift[nodes][:, nodes]

    def _bind_round(self, r, shift_r):
        self._bind(shift_r, self._nodes)

    def _shift(self, Z_nd, hold=None):     # every row is hosted here: held already (``shift``)
        key = (Z_nd.dtype, Z_nd.device)
        S = self._matrix.get(key)
        if S is None:
            S = self._matrix[key] = to_torch_sparse(self._shift_csr, Z_nd.dtype).to(Z_nd.device)
        return torch.sparse.mm(S, Z_nd)

    def all_reduce(self, x):
        return x.clone()
