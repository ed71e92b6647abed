"""The downstream problem: ``softmax`` (the per-agent softmax classifier, its loss and
gradients), ``tasks`` (a task family: data shards, graphs and starting points per seed),
``datasets``, ``data_files`` and ``pixel_rows`` (reading the bundled and downloaded data), and
``topology`` (a graph family plus a normalisation, and the presets: ``topologies/*.json``, package
data) built from ``graphs`` (the graph families), ``shift_operators`` (normalisations and checks),
``edge_list`` (a user's graph file), ``spectra`` (spectral radius and gap, the consensus check)
and ``placement`` (agents on workers).
May import ``io`` only; it knows nothing of communication or of the optimizers."""
