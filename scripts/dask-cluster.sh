#!/usr/bin/env bash
# dask-cluster.sh: a throw-away Dask cluster (one scheduler, one worker) for the Dask tests of
# `scripts/test.sh`, bound to 127.0.0.1 only.
#
#   scripts/dask-cluster.sh install   create the virtualenv with dask[distributed] (once; also
#                                     done by `start`)
#   scripts/dask-cluster.sh start     start the scheduler and a worker, wait until the worker has
#                                     joined, print `TH_TEST_DASK_SCHEDULER=tcp://127.0.0.1:PORT`
#                                     on stdout
#   scripts/dask-cluster.sh env       print that line for the running cluster
#   scripts/dask-cluster.sh python    print the virtualenv's python (for TH_DASK_PYTHON)
#   scripts/dask-cluster.sh status    exit 0 if the recorded scheduler and worker are running
#   scripts/dask-cluster.sh stop      stop exactly the two recorded process groups
#
# The virtualenv is also the one `th profile --backend dask` uses by default for its runner
# ($TH_CACHE/venv-dask/bin/python, unless TH_DASK_PYTHON is set). Scheduler and worker each run
# in their own session (setsid), so each PID is its process-group id and `stop` ends them with
# their children (the worker's nanny process, th-worker subprocesses) and nothing else.
#
# Environment:
#   TH_CACHE        cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/truthound); the
#                   virtualenv is $TH_CACHE/venv-dask
#   DASK_RUN_DIR    where the state file, logs and the worker's directory live (default
#                   $TH_CACHE/run/dask); a fresh directory per caller runs clusters side by side
#   DASK_PORT       scheduler port (default: a free port picked at start)
#   DASK_WAIT_S     readiness bound in seconds (default 90)
#   DASK_NTHREADS   worker threads, i.e. tasks at once (default 2)
#   DASK_PKG        pip requirement (default "dask[distributed]==2026.8.0")
#
# Only stdout carries the TH_TEST_DASK_SCHEDULER line; progress and errors go to stderr.
set -euo pipefail

CACHE=${TH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/truthound}
VENV=$CACHE/venv-dask
RUN_DIR=${DASK_RUN_DIR:-$CACHE/run/dask}
STATE=$RUN_DIR/state
HOST=127.0.0.1
WAIT_S=${DASK_WAIT_S:-90}
NTHREADS=${DASK_NTHREADS:-2}
DASK_PKG=${DASK_PKG:-"dask[distributed]==2026.8.0"}
DASK_VERSION=${DASK_PKG##*==}
MARKER=$VENV/.installed

SERVICE=dask-cluster
. "$(dirname "${BASH_SOURCE[0]}")/lib/service.sh"

venv_ok() {
  [ -f "$MARKER" ] && [ "$(cat "$MARKER")" = "$DASK_PKG" ] && [ -x "$VENV/bin/dask" ] &&
    "$VENV/bin/python" -c "import distributed; assert distributed.__version__ == '$DASK_VERSION', distributed.__version__" \
      >/dev/null 2>&1
}

cmd_install() { venv_install dask "$DASK_PKG"; }

read_state() {  # sets PORT SPID SSTART WPID WSTART
  [ -f "$STATE" ] || return 1
  PORT=$(sed -n 's/^PORT=//p' "$STATE")
  SPID=$(sed -n 's/^SCHEDULER_PID=//p' "$STATE")
  SSTART=$(sed -n 's/^SCHEDULER_START=//p' "$STATE")
  WPID=$(sed -n 's/^WORKER_PID=//p' "$STATE")
  WSTART=$(sed -n 's/^WORKER_START=//p' "$STATE")
  [ -n "$PORT" ] && [ -n "$SPID" ]
}

running() {
  read_state || return 1
  alive "$SPID" "$SSTART" && alive "$WPID" "$WSTART"
}

env_line() { printf 'TH_TEST_DASK_SCHEDULER=tcp://%s:%s\n' "$HOST" "$1"; }

# workers known to the scheduler at tcp://HOST:$1 (fails if it does not answer)
worker_count() {
  "$VENV/bin/python" - "tcp://$HOST:$1" <<'PYEOF' 2>/dev/null
import sys
from distributed import Client
with Client(sys.argv[1], timeout=3) as c:
    print(len(c.scheduler_info(n_workers=-1)["workers"]))
PYEOF
}

stop_recorded() {
  read_state || return 0
  if alive "${WPID:-}" "${WSTART:-}"; then kill_group "$WPID" || log "worker group $WPID did not exit"; fi
  if alive "$SPID" "$SSTART"; then kill_group "$SPID" || log "scheduler group $SPID did not exit"; fi
  rm -f "$STATE"
}

cmd_start() {
  if running; then
    log "already running (scheduler pid $SPID, worker pid $WPID, port $PORT)"
    env_line "$PORT"
    return 0
  fi
  stop_recorded  # half of a cluster: stop what is left of it
  cmd_install
  mkdir -p "$RUN_DIR"
  local tries=1 attempt port spid wpid t0 n
  [ -n "${DASK_PORT:-}" ] || tries=3
  for attempt in $(seq 1 "$tries"); do
    port=${DASK_PORT:-$(free_port)}
    if (exec 3<>"/dev/tcp/$HOST/$port") 2>/dev/null; then
      [ -z "${DASK_PORT:-}" ] || die "port $port on $HOST is already in use (DASK_PORT)"
      continue
    fi
    t0=$SECONDS
    setsid "$VENV/bin/dask" scheduler --host "$HOST" --port "$port" --dashboard-address "$HOST:0" \
      --no-show >"$RUN_DIR/scheduler.log" 2>&1 </dev/null &
    spid=$!
    printf 'PORT=%s\nSCHEDULER_PID=%s\nSCHEDULER_START=%s\n' "$port" "$spid" "$(proc_field "$spid" 20 || true)" >"$STATE"
    setsid "$VENV/bin/dask" worker "tcp://$HOST:$port" --host "$HOST" --nthreads "$NTHREADS" \
      --nworkers 1 --memory-limit 2GiB --name w1 --dashboard-address "$HOST:0" \
      --local-directory "$RUN_DIR/w1" >"$RUN_DIR/worker.log" 2>&1 </dev/null &
    wpid=$!
    printf 'WORKER_PID=%s\nWORKER_START=%s\n' "$wpid" "$(proc_field "$wpid" 20 || true)" >>"$STATE"
    while :; do
      n=$(worker_count "$port" || true)
      if [ -n "$n" ] && [ "$n" -ge 1 ] && alive "$spid" "$(proc_field "$spid" 20)"; then
        log "dask $DASK_VERSION ready on tcp://$HOST:$port: $n worker(s), $NTHREADS threads ($((SECONDS - t0)) s; logs in $RUN_DIR)"
        env_line "$port"
        return 0
      fi
      if ! kill -0 "$spid" 2>/dev/null || [ "$(proc_field "$spid" 1)" = Z ] ||
         ! kill -0 "$wpid" 2>/dev/null || [ "$(proc_field "$wpid" 1)" = Z ]; then
        log "the scheduler or the worker exited during start (attempt $attempt); last log lines:"
        tail -n 15 "$RUN_DIR/scheduler.log" "$RUN_DIR/worker.log" >&2 || true
        break
      fi
      if [ $((SECONDS - t0)) -ge "$WAIT_S" ]; then
        log "no worker joined tcp://$HOST:$port within $WAIT_S s; last log lines:"
        tail -n 15 "$RUN_DIR/scheduler.log" "$RUN_DIR/worker.log" >&2 || true
        stop_recorded
        exit 1
      fi
      sleep 0.5
    done
    stop_recorded
  done
  die "could not start the Dask cluster (see $RUN_DIR)"
}

cmd_stop() {
  if ! read_state; then
    log "no state file at $STATE; nothing to stop"
    return 0
  fi
  log "stopping the Dask cluster (scheduler group $SPID, worker group ${WPID:-none}, port $PORT)"
  stop_recorded
}

cmd_env() {
  running || die "no running cluster recorded in $STATE (run: $0 start)"
  env_line "$PORT"
}

case ${1:-} in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  env) cmd_env ;;
  python) cmd_install; printf '%s\n' "$VENV/bin/python" ;;
  status)
    if running; then log "running: scheduler pid $SPID, worker pid $WPID, port $PORT"; else log "not running"; exit 1; fi ;;
  *)
    echo "usage: $0 {install|start|stop|env|python|status}" >&2
    exit 64 ;;
esac
