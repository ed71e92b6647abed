"""The downstream problem: ``softmax`` (the per-agent softmax classifier, its loss and
gradients), ``tasks`` (a task family: data shards, graphs and starting points per seed),
``datasets``, ``data_files`` and ``pixel_rows`` (reading the bundled and downloaded data), and
``topology`` with ``edge_list`` (graph families, shift operators, presets from topologies/) and
``spectra`` (spectral radius and gap, the consensus check).
May import ``io`` only; it knows nothing of communication or of the optimizers."""
