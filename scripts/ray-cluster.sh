#!/usr/bin/env bash
# ray-cluster.sh: a throw-away Ray cluster (one head node, 2 CPUs, the dashboard with the Jobs
# REST API) for the Ray tests of `scripts/test.sh`, bound to 127.0.0.1 only.
#
#   scripts/ray-cluster.sh install   create the virtualenv with ray[default] (once; also done by
#                                    `start`)
#   scripts/ray-cluster.sh start     start the head, wait until the Jobs API answers, print
#                                    `TH_TEST_RAY_ADDRESS=http://127.0.0.1:PORT` on stdout
#   scripts/ray-cluster.sh env       print that line for the running cluster
#   scripts/ray-cluster.sh python    print the virtualenv's python
#   scripts/ray-cluster.sh status    exit 0 if the recorded head is running
#   scripts/ray-cluster.sh stop      stop exactly the recorded process group
#
# The head runs `ray start --head --block` in its own session (setsid): its PID is its
# process-group id, and the GCS server, raylet, dashboard, job supervisors, workers (and the
# th-worker subprocesses of tasks) are all in that group, so `stop` ends them and nothing else.
# As ../shared/clusters/up.sh does: RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps Ray on 127.0.0.1
# instead of the host's address, the virtualenv's bin comes first on PATH (a job's `python` is
# the virtualenv's), 2 CPUs and a 256 MiB object store.
#
# Environment:
#   TH_CACHE        cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/truthound); the
#                   virtualenv is $TH_CACHE/venv-ray
#   RAY_RUN_DIR     where the state file, the log and Ray's temp directory live (default
#                   $TH_CACHE/run/ray); a fresh directory per caller runs clusters side by side
#   RAY_DASH_PORT   dashboard (Jobs API) port (default: a free port picked at start); the GCS,
#                   client-server and dashboard-agent ports are always picked free
#   RAY_WAIT_S      readiness bound in seconds (default 120)
#   RAY_NUM_CPUS    CPUs of the head, i.e. tasks at once (default 2)
#   RAY_PKG         pip requirement (default "ray[default]==2.60.0")
#
# Only stdout carries the TH_TEST_RAY_ADDRESS line; progress and errors go to stderr.
set -euo pipefail

CACHE=${TH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/truthound}
VENV=$CACHE/venv-ray
RUN_DIR=${RAY_RUN_DIR:-$CACHE/run/ray}
STATE=$RUN_DIR/state
HOST=127.0.0.1
WAIT_S=${RAY_WAIT_S:-120}
NUM_CPUS=${RAY_NUM_CPUS:-2}
RAY_PKG=${RAY_PKG:-"ray[default]==2.60.0"}
RAY_VERSION=${RAY_PKG##*==}
MARKER=$VENV/.installed

SERVICE=ray-cluster
. "$(dirname "${BASH_SOURCE[0]}")/lib/service.sh"

venv_ok() {
  [ -f "$MARKER" ] && [ "$(cat "$MARKER")" = "$RAY_PKG" ] && [ -x "$VENV/bin/ray" ] &&
    "$VENV/bin/python" -c "import ray, ray.dashboard; assert ray.__version__ == '$RAY_VERSION', ray.__version__" \
      >/dev/null 2>&1
}

cmd_install() { venv_install ray "$RAY_PKG"; }

read_state() {  # sets PORT HPID HSTART
  [ -f "$STATE" ] || return 1
  PORT=$(sed -n 's/^PORT=//p' "$STATE")
  HPID=$(sed -n 's/^HEAD_PID=//p' "$STATE")
  HSTART=$(sed -n 's/^HEAD_START=//p' "$STATE")
  [ -n "$PORT" ] && [ -n "$HPID" ]
}

running() {
  read_state || return 1
  alive "$HPID" "$HSTART"
}

env_line() { printf 'TH_TEST_RAY_ADDRESS=http://%s:%s\n' "$HOST" "$1"; }

# the Jobs API answers, and the head has its CPUs (the raylet registered)
ready() {  # port
  "$VENV/bin/python" - "http://$HOST:$1" "$NUM_CPUS" <<'PYEOF' >/dev/null 2>&1
import json, sys, urllib.request
base, cpus = sys.argv[1], float(sys.argv[2])
urllib.request.urlopen(base + "/api/jobs/", timeout=3).read()
nodes = json.load(urllib.request.urlopen(base + "/nodes?view=summary", timeout=3))
alive = [n for n in nodes["data"]["summary"] if n.get("raylet", {}).get("state") == "ALIVE"]
assert alive and sum(n["raylet"]["resourcesTotal"].get("CPU", 0) for n in alive) >= cpus
PYEOF
}

stop_recorded() {
  read_state || return 0
  if alive "$HPID" "$HSTART" || group_alive "$HPID"; then
    kill_group "$HPID" 15 || log "head group $HPID did not exit"
  fi
  rm -f "$STATE"
}

cmd_start() {
  if running; then
    log "already running (head pid $HPID, dashboard port $PORT)"
    env_line "$PORT"
    return 0
  fi
  stop_recorded  # what is left of an earlier head
  cmd_install
  mkdir -p "$RUN_DIR"
  local tries=1 attempt port gcs client agent hpid t0
  [ -n "${RAY_DASH_PORT:-}" ] || tries=3
  for attempt in $(seq 1 "$tries"); do
    # Ray's default dashboard port when it is free, so that a `ray://127.0.0.1:PORT` client
    # address (mapped to the head's dashboard at 8265) reaches this head in the tests
    port=${RAY_DASH_PORT:-$(port_or_free 8265)}
    gcs=$(free_port)
    client=$(free_port)
    agent=$(free_port)
    if (exec 3<>"/dev/tcp/$HOST/$port") 2>/dev/null; then
      [ -z "${RAY_DASH_PORT:-}" ] || die "port $port on $HOST is already in use (RAY_DASH_PORT)"
      continue
    fi
    t0=$SECONDS
    # Ray's unix sockets live under --temp-dir: it must stay short (108-byte socket paths).
    mkdir -p "$RUN_DIR/tmp"
    setsid env PATH="$VENV/bin:$PATH" RAY_USAGE_STATS_ENABLED=0 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 \
      "$VENV/bin/ray" start --head --block \
      --node-ip-address="$HOST" --port="$gcs" --ray-client-server-port="$client" \
      --dashboard-host="$HOST" --dashboard-port="$port" --dashboard-agent-listen-port="$agent" \
      --include-dashboard=true --num-cpus="$NUM_CPUS" --object-store-memory=268435456 \
      --temp-dir="$RUN_DIR/tmp" --disable-usage-stats >"$RUN_DIR/ray.log" 2>&1 </dev/null &
    hpid=$!
    printf 'PORT=%s\nHEAD_PID=%s\nHEAD_START=%s\n' "$port" "$hpid" "$(proc_field "$hpid" 20 || true)" >"$STATE"
    while :; do
      if ready "$port"; then
        log "ray $RAY_VERSION ready on http://$HOST:$port: $NUM_CPUS CPUs ($((SECONDS - t0)) s; logs in $RUN_DIR)"
        env_line "$port"
        return 0
      fi
      if ! kill -0 "$hpid" 2>/dev/null || [ "$(proc_field "$hpid" 1)" = Z ]; then
        log "the Ray head exited during start (attempt $attempt); last log lines:"
        tail -n 20 "$RUN_DIR/ray.log" >&2 || true
        break
      fi
      if [ $((SECONDS - t0)) -ge "$WAIT_S" ]; then
        log "the Ray head did not become ready on http://$HOST:$port within $WAIT_S s; last log lines:"
        tail -n 20 "$RUN_DIR/ray.log" >&2 || true
        stop_recorded
        exit 1
      fi
      sleep 0.5
    done
    stop_recorded
  done
  die "could not start the Ray head (see $RUN_DIR)"
}

cmd_stop() {
  if ! read_state; then
    log "no state file at $STATE; nothing to stop"
    return 0
  fi
  log "stopping the Ray head (process group $HPID, dashboard port $PORT)"
  stop_recorded
}

cmd_env() {
  running || die "no running Ray head recorded in $STATE (run: $0 start)"
  env_line "$PORT"
}

case ${1:-} in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  env) cmd_env ;;
  python) cmd_install; printf '%s\n' "$VENV/bin/python" ;;
  status)
    if running; then log "running: head pid $HPID, dashboard port $PORT"; else log "not running"; exit 1; fi ;;
  *)
    echo "usage: $0 {install|start|stop|env|python|status}" >&2
    exit 64 ;;
esac
