"""Run a surf-dist command as the driver of a running Ray cluster, on one of its nodes.

``ray submit CLUSTER launch/ray_entry.py -- [--workers N] COMMAND [ARGS...]`` (what
``launch/ray_job.sh`` runs) copies this file to the head node and runs it there as
``python ray_entry.py ...``. It runs ``surf-dist COMMAND ARGS... --backend ray --workers N``
(N: 2 unless given; a ``--backend`` / ``--workers`` inside ARGS is overridden) with
``RAY_ADDRESS=auto`` unless the variable is already set, so that the Ray backend joins the
cluster this node belongs to instead of starting a Ray instance of its own.

surf-dist must be installed on the node (the cluster image or the hosts' environment). Output
folders are written on this node, relative to the directory the command runs in (the remote
user's home directory): fetch them with ``ray rsync-down CLUSTER '~/runs/x' runs/x``.
"""
from __future__ import annotations

import argparse
import os
import sys

DEFAULT_WORKERS = 2


def surf_dist_argv(argv: list[str]) -> list[str]:
    """The surf-dist arguments for this script's ``[--workers N] COMMAND [ARGS...]``."""
    parser = argparse.ArgumentParser(
        prog="ray_entry.py", description=__doc__.split("\n\n")[0],
        usage="%(prog)s [--workers N] COMMAND [ARGS...]")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help=f"Ray rank actors (default {DEFAULT_WORKERS})")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the surf-dist command line")
    args = parser.parse_args(argv)
    if not args.command:
        parser.error("give a surf-dist command, e.g. baselines --quick --out runs/ray")
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    return args.command + ["--backend", "ray", "--workers", str(args.workers)]


def main(argv: list[str] | None = None) -> int:
    command = surf_dist_argv(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("RAY_ADDRESS", "auto")    # join this node's cluster
    try:
        from surf_dist.cli.main import main as surf_dist_main
    except ImportError as err:
        sys.exit(f"ray_entry.py: surf-dist is not installed for {sys.executable} on this node "
                 f"({err}); install it there (pip install -c constraints.txt .)")
    return surf_dist_main(command)


if __name__ == "__main__":
    sys.exit(main())
