#!/usr/bin/env bash
# N JAX processes on this machine, joined over localhost, each owning DEVICES_PER_PROCESS CPU devices.
#
#   launch/local.sh 2 python -m storyjax.train --config=configs/director.py:smoke --workdir=runs/two_procs
#
# Process 0's output goes to the terminal; process i>0 writes to ${LOG_DIR:-/tmp}/storyjax_process_<i>.log.
# Exits with the first non-zero exit code of any process (all are stopped if one fails).
set -euo pipefail

if [[ $# -lt 2 || ! "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 NUM_PROCESSES COMMAND [ARGS...]" >&2
  exit 2
fi
num_processes=$1
shift
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("localhost", 0)); print(s.getsockname()[1])'; }
port=${COORDINATOR_PORT:-$(free_port)}
log_dir=${LOG_DIR:-/tmp}

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT INT TERM

run_process() {  # PROCESS_ID COMMAND...
  local process_id=$1
  shift
  JAX_PLATFORMS=cpu JAX_NUM_CPU_DEVICES="${DEVICES_PER_PROCESS:-2}" JAX_COORDINATOR_ADDRESS="localhost:${port}" \
    STORYJAX_NUM_PROCESSES="${num_processes}" STORYJAX_PROCESS_ID="${process_id}" "$@"
}

for ((process_id = 0; process_id < num_processes; process_id++)); do
  if ((process_id == 0)); then
    run_process 0 "$@" &
  else
    run_process "${process_id}" "$@" > "${log_dir}/storyjax_process_${process_id}.log" 2>&1 &
  fi
  pids+=($!)
done

status=0
for ((finished = 0; finished < num_processes; finished++)); do
  if wait -n; then :; else
    code=$?
    if ((status == 0)); then status=$code; cleanup; fi
  fi
done
exit "${status}"
