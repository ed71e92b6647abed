"""The optimizers. Learned: ``learned`` (graph filter, local networks, the unrolled network),
``constraints`` (the descent constraints and their duals) and ``pretrained/`` (the shipped
models, as package data). Classical: ``registry``, the one registry of baselines (each a
``Method`` with its update, hyperparameters and message size), with ``accelerated`` (its momentum
and Chebyshev methods); the bench runs all 14, ``evaluate`` and ``demo --train`` four of them.
May import ``problem``, ``comm`` and ``io``."""
