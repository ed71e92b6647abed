"""The optimizers. Learned: ``learned`` (graph filter, local networks, the unrolled network),
``constraints`` (the descent constraints and their duals) and ``pretrained/`` (the shipped
models, as package data). Classical: ``registry`` (every baseline of the bench, its step grid
and its tuning rule), ``accelerated`` (its momentum and Chebyshev methods) and ``baselines``
(the four baselines ``evaluate`` and ``demo --train`` still run). May import ``problem``,
``comm`` and ``io``."""
