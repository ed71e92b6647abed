#!/usr/bin/env bash
# Run a surf-dist command on torchrun ranks (gloo, one process per rank; with --device cuda in
# ARGS, nccl and one GPU per rank: LOCAL_RANK picks it).
#
#   NPROC=2 ARGS="baselines --quick --out runs/b" launch/torchrun.sh
#   NPROC=8 ARGS="train --out runs/gpu --device cuda" launch/torchrun.sh       # a node of 8 GPUs
#   DRY_RUN=1 NPROC=4 ARGS="demo --out runs/demo" launch/torchrun.sh     # print the command
#
# Environment: NPROC ranks per node (2), NNODES nodes (1), NODE_RANK this node (0),
# RDZV_ENDPOINT host:port of node 0 (needed when NNODES > 1), ARGS the surf-dist arguments,
# TORCHRUN the launcher (torchrun), DRY_RUN=1 prints the command instead of running it.
# --backend torch and --workers NPROC*NNODES (the WORLD_SIZE torchrun starts) are appended.
set -euo pipefail

NPROC=${NPROC:-2}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
ARGS=${ARGS:-"baselines --quick --out runs/torchrun"}
TORCHRUN=${TORCHRUN:-torchrun}
WORLD=$((NPROC * NNODES))

if [ "$NNODES" -eq 1 ]; then
    rendezvous=(--standalone)
    export GLOO_SOCKET_IFNAME=${GLOO_SOCKET_IFNAME:-lo}   # one machine: talk over loopback
else
    : "${RDZV_ENDPOINT:?set RDZV_ENDPOINT=host:port of node 0 when NNODES > 1}"
    rendezvous=(--nnodes "$NNODES" --node-rank "$NODE_RANK" --rdzv-backend c10d --rdzv-endpoint "$RDZV_ENDPOINT")
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

# shellcheck disable=SC2206  # ARGS is split into words on purpose
cmd=("$TORCHRUN" "${rendezvous[@]}" --nproc-per-node "$NPROC" -m surf_dist.cli.main $ARGS
     --backend torch --workers "$WORLD")

if [ "${DRY_RUN:-0}" = "1" ]; then
    printf '%q ' "${cmd[@]}"
    echo
else
    exec "${cmd[@]}"
fi
