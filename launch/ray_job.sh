#!/usr/bin/env bash
# Run a surf-dist command on a running Ray cluster (one started with `ray up`).
#
#   WORKERS=2 ARGS="baselines --quick --out runs/ray" launch/ray_job.sh
#   CLUSTER=launch/cluster-cloud.yaml WORKERS=4 ARGS="demo --out runs/demo" launch/ray_job.sh
#   MODE=job RAY_JOB_ADDRESS=http://127.0.0.1:8265 ARGS="demo --out /home/surf/runs/demo" launch/ray_job.sh
#   DRY_RUN=1 MODE=job launch/ray_job.sh                                   # print the command
#
# MODE=submit (default): `ray submit CLUSTER launch/ray_entry.py -- --workers WORKERS ARGS`:
#   over ssh, runs launch/ray_entry.py on the head node as the driver (it adds --backend ray
#   --workers WORKERS and joins the cluster with RAY_ADDRESS=auto). Needs the cluster file
#   and ssh only. Outputs land on the head node: `ray rsync-down CLUSTER '~/runs/x' runs/x`.
# MODE=job: `ray job submit --address RAY_JOB_ADDRESS --working-dir WORKING_DIR --
#   surf-dist ARGS --backend ray --workers WORKERS` through the Ray Jobs API: needs ray[default]
#   and the dashboard on the head (the CUDA image has both; cluster-local.yaml turns the
#   dashboard off) and a route to it (`ray dashboard CLUSTER` tunnels it to 127.0.0.1:8265).
#   WORKING_DIR (the repository, minus what .gitignore lists) is uploaded and comes first on
#   the job's Python path; relative --out folders land in that temporary copy, so give an
#   absolute one on the head.
#
# Environment: MODE submit|job (submit), CLUSTER the cluster file (launch/cluster-local.yaml),
# WORKERS Ray rank actors (2), ARGS the surf-dist arguments, RAY_JOB_ADDRESS the dashboard
# (http://127.0.0.1:8265), WORKING_DIR (.), RAY the ray executable (ray), DRY_RUN=1 prints the
# command instead of running it.
set -euo pipefail

MODE=${MODE:-submit}
CLUSTER=${CLUSTER:-launch/cluster-local.yaml}
WORKERS=${WORKERS:-2}
ARGS=${ARGS:-"baselines --quick --out runs/ray"}
RAY_JOB_ADDRESS=${RAY_JOB_ADDRESS:-http://127.0.0.1:8265}
WORKING_DIR=${WORKING_DIR:-.}
RAY=${RAY:-ray}

case "$WORKERS" in
    '' | *[!0-9]* | 0) echo "ray_job.sh: WORKERS must be a positive integer, got '$WORKERS'" >&2; exit 2 ;;
esac

# shellcheck disable=SC2206  # ARGS is split into words on purpose
case "$MODE" in
    submit)
        cmd=("$RAY" submit "$CLUSTER" "$(dirname "$0")/ray_entry.py" -- --workers "$WORKERS" $ARGS) ;;
    job)
        cmd=("$RAY" job submit --address "$RAY_JOB_ADDRESS" --working-dir "$WORKING_DIR" --
             surf-dist $ARGS --backend ray --workers "$WORKERS") ;;
    *)
        echo "ray_job.sh: MODE must be submit or job, got '$MODE'" >&2; exit 2 ;;
esac

if [ "${DRY_RUN:-0}" = "1" ]; then
    printf '%q ' "${cmd[@]}"
    echo
else
    exec "${cmd[@]}"
fi
