#!/usr/bin/env bash
# s3-server.sh: a throw-away S3-compatible server (moto, in memory, accepts any credentials)
# for the S3 tests of `scripts/test.sh`, bound to 127.0.0.1 only.
#
#   scripts/s3-server.sh install   create the virtualenv with moto (once; also done by `start`)
#   scripts/s3-server.sh start     start the server, wait until it answers, print
#                                  `export TH_TEST_S3_ENDPOINT=http://127.0.0.1:PORT` on stdout
#   scripts/s3-server.sh env       print that export line for the running server
#   scripts/s3-server.sh status    exit 0 if the recorded server is running
#   scripts/s3-server.sh stop      stop exactly the recorded process group
#
# Why moto: `pip install` only (no docker, no compiler), starts in ~2 s, speaks enough of the S3
# API for object_store. It runs in its own session (setsid), so its PID is also its process-group
# id and `stop` can end it together with any children, and nothing else.
#
# Environment:
#   TH_CACHE     cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/truthound); the virtualenv is
#                $TH_CACHE/venv-moto
#   S3_RUN_DIR   where the state file and the server log live (default $TH_CACHE/run/s3); use a
#                fresh directory per caller to run several servers side by side (test.sh does)
#   S3_PORT      port to listen on (default: a free port picked at start)
#   S3_WAIT_S    readiness bound in seconds (default 60)
#   MOTO_PKG     pip requirement (default "moto[server]==5.2.5")
#
# Only stdout carries the export line; progress and errors go to stderr.
set -euo pipefail

CACHE=${TH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/truthound}
VENV=$CACHE/venv-moto
RUN_DIR=${S3_RUN_DIR:-$CACHE/run/s3}
STATE=$RUN_DIR/state
LOG=$RUN_DIR/moto.log
HOST=127.0.0.1
WAIT_S=${S3_WAIT_S:-60}
MOTO_PKG=${MOTO_PKG:-"moto[server]==5.2.5"}
MOTO_VERSION=${MOTO_PKG##*==}
# the marker is written only after pip succeeded, so an interrupted install is redone
MARKER=$VENV/.installed

SERVICE=s3-server
. "$(dirname "${BASH_SOURCE[0]}")/lib/service.sh"

venv_ok() {
  [ -f "$MARKER" ] && [ "$(cat "$MARKER")" = "$MOTO_PKG" ] && [ -x "$VENV/bin/moto_server" ] &&
    "$VENV/bin/python" -c "import moto, moto.server, flask; assert moto.__version__ == '$MOTO_VERSION', moto.__version__" \
      >/dev/null 2>&1
}

cmd_install() { venv_install moto "$MOTO_PKG"; }

read_state() {  # sets PORT PID START; fails if no state file
  [ -f "$STATE" ] || return 1
  PORT=$(sed -n 's/^PORT=//p' "$STATE")
  PID=$(sed -n 's/^PID=//p' "$STATE")
  START=$(sed -n 's/^START=//p' "$STATE")
  [ -n "$PORT" ] && [ -n "$PID" ]
}

# the recorded server is running: same PID, same start time (guards against PID reuse), not a zombie
running() {
  read_state && alive "$PID" "$START"
}

answers() {  # port
  if command -v curl >/dev/null 2>&1; then
    curl -s -o /dev/null --max-time 2 "http://$HOST:$1/"
  else
    python3 - "$HOST" "$1" <<'EOF' >/dev/null 2>&1
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(f"http://{sys.argv[1]}:{sys.argv[2]}/", timeout=2)
except urllib.error.HTTPError:
    pass  # any HTTP answer means the server is up
EOF
  fi
}

export_line() { printf 'export TH_TEST_S3_ENDPOINT=http://%s:%s\n' "$HOST" "$1"; }

cmd_start() {
  if running; then
    log "already running (pid $PID, port $PORT)"
    export_line "$PORT"
    return 0
  fi
  cmd_install
  mkdir -p "$RUN_DIR"
  local tries=1 attempt port pid t0
  # a picked port can be taken by someone else before moto binds it: retry a few times
  [ -n "${S3_PORT:-}" ] || tries=3
  for attempt in $(seq 1 "$tries"); do
    port=${S3_PORT:-$(free_port)}
    if (exec 3<>"/dev/tcp/$HOST/$port") 2>/dev/null; then
      [ -z "${S3_PORT:-}" ] || die "port $port on $HOST is already in use (S3_PORT)"
      continue
    fi
    t0=$SECONDS
    # Not a process-group leader here (no job control in a script), so setsid execs in place and
    # $! is moto itself: PID == PGID == SID.
    setsid "$VENV/bin/moto_server" -H "$HOST" -p "$port" >"$LOG" 2>&1 </dev/null &
    pid=$!
    printf 'PORT=%s\nPID=%s\nSTART=%s\n' "$port" "$pid" "$(proc_field "$pid" 20 || true)" >"$STATE"
    while :; do
      # answered, and by our process (not by something else that took the port meanwhile)
      if answers "$port" && kill -0 "$pid" 2>/dev/null && [ "$(proc_field "$pid" 1)" != Z ]; then
        if [ "$(proc_field "$pid" 3)" != "$pid" ]; then
          log "WARNING: pid $pid is not its own process group; stop may not reach it"
        fi
        log "moto $MOTO_VERSION ready on $HOST:$port (pid $pid, $((SECONDS - t0)) s; log $LOG)"
        export_line "$port"
        return 0
      fi
      if ! kill -0 "$pid" 2>/dev/null || [ "$(proc_field "$pid" 1)" = Z ]; then
        log "moto_server exited during start (attempt $attempt); last log lines:"
        tail -n 15 "$LOG" >&2 || true
        break
      fi
      if [ $((SECONDS - t0)) -ge "$WAIT_S" ]; then
        log "moto_server did not answer on $HOST:$port within $WAIT_S s; last log lines:"
        tail -n 15 "$LOG" >&2 || true
        kill_group "$pid" || true
        rm -f "$STATE"
        exit 1
      fi
      sleep 0.25
    done
    wait "$pid" 2>/dev/null || true
    rm -f "$STATE"
  done
  die "could not start moto_server (see $LOG)"
}

cmd_stop() {
  if ! read_state; then
    log "no state file at $STATE; nothing to stop"
    return 0
  fi
  if running; then
    log "stopping moto (process group $PID, port $PORT)"
    kill_group "$PID" || die "process group $PID did not exit"
  else
    log "recorded server (pid $PID) is not running any more"
  fi
  rm -f "$STATE"
}

cmd_env() {
  running || die "no running server recorded in $STATE (run: $0 start)"
  export_line "$PORT"
}

case ${1:-} in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  env) cmd_env ;;
  status)
    if running; then log "running: pid $PID, port $PORT"; else log "not running"; exit 1; fi ;;
  *)
    echo "usage: $0 {install|start|stop|env|status}" >&2
    exit 64 ;;
esac
