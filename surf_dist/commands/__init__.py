"""The jobs behind the commands: ``jobs`` (train, evaluate, baselines, demo --train, run folders
and their files), ``results`` (summary.json, results.csv, the terminal table), ``bench/`` (the
honest protocol: its grids, tuning search, grid runs, runner, round limit, report, saved
baselines and the demo; its tuned baselines serve every command: ``summary_curves``) and ``experiments/`` (the
figures of the results report). A job is a function of (config, worker) handed to ``runtime``.
May import ``runtime``, ``core``, ``methods``, ``problem``, ``comm`` and ``io``; never ``cli``."""
