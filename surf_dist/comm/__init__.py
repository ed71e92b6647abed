"""Communication: the ``Communicator`` interface (``base``: the differentiable halo exchange
``shift`` and ``all_reduce``), its single-process version (``local``), the torch.distributed one
(``torch_dist``) and the ledger of messages and bytes (``ledger``). The other home of
``torch.distributed``; imports no other folder of the package, so the maths above never knows
which backend runs it."""
