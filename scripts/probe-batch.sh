#!/usr/bin/env bash
# Train several recipes side by side (one process each; on a GPU machine they share the GPU)
# and pack their run directories into one tarball for evaluation elsewhere.
#
#   scripts/probe-batch.sh OUT_TAR MAX_MINUTES 'name|overrides' ['name|overrides' ...]
#
# Each recipe is `--config default` plus its overrides, written to runs/probes/NAME. A run
# stops at run.max_steps (default 5,000) or after MAX_MINUTES, whichever comes first; its
# logs/metrics.csv says how many steps it made. Evaluate the checkpoints afterwards with
# `python -m training evaluate --checkpoint runs/probes/NAME/model.safetensors ...`.
set -uo pipefail
out_tar=$1 minutes=$2
shift 2
PY=${PY:-python3}
mkdir -p runs/probes
pids=()
for spec in "$@"; do
  name=${spec%%|*} overrides=${spec#*|}
  # shellcheck disable=SC2086  # overrides are separate words by design
  $PY -m training train --config default --no-resume --no-progress $overrides \
    run.out_dir="runs/probes/$name" run.max_minutes="$minutes" \
    >"runs/probes/$name.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
for spec in "$@"; do
  name=${spec%%|*}
  echo "$name: $(tail -n 1 "runs/probes/$name.log")"
done
tar -czf "$out_tar" -C runs/probes --exclude='checkpoints' --exclude='images' --exclude='tb' .
exit $status
