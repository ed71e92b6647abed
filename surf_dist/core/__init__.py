"""The loops, written once for every backend: ``engine`` (one worker's forward pass over its
block of agents), ``coordinator`` (dual variables, dropouts, checkpoints), ``train`` (the
meta-training loop: primal and dual steps), ``evaluate`` (the models on test tasks, the centralized optimum), ``models`` (a saved model
loaded) and
``descent_stats`` (how often each layer descends). May import ``methods``, ``problem``, ``comm``
and ``io``; never ``torch.distributed`` or ``ray`` (a ``Communicator`` stands for them)."""
