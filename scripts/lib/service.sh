# service.sh: what the test servers' scripts share (s3-server.sh, dask-cluster.sh,
# ray-cluster.sh): logging, a pip package installed once into a cached venv, and processes
# tracked by PID and start time and stopped by process group, so that `stop` ends exactly what
# `start` started.
#
# Sourced, not run. The sourcing script sets, before calling these functions:
#   SERVICE   name in log lines, e.g. s3-server
#   CACHE     the cache directory (venvs, locks, pip logs)
#   VENV      the venv to install into
#   MARKER    file written (with the requirement) only after a successful install
# and defines `venv_ok`: whether $VENV holds a working install of the pinned requirement.

log() { printf '[%s] %s\n' "$SERVICE" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# venv_install NAME REQUIREMENT: pip-installs REQUIREMENT (one or more space-separated
# requirements) into $VENV once. Concurrent installs
# (two test runs at once on a fresh machine) are serialised with a lock; the marker is written
# only after `venv_ok` agrees, so an interrupted install is redone.
venv_install() {
  local name=$1 pkg=$2
  mkdir -p "$CACHE"
  venv_ok && return 0
  local lock=$CACHE/venv-$name.lock
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$lock"
    flock 9
  fi
  if ! venv_ok; then
    local plog=$CACHE/venv-$name-pip.log t0=$SECONDS
    log "installing $pkg into $VENV (once)"
    rm -f "$MARKER"
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" >"$plog" 2>&1 ||
      { cat "$plog" >&2; die "python3 -m venv $VENV failed (on Debian/Ubuntu: apt-get install python3-venv)"; }
    # REQUIREMENT may list several packages, separated by spaces
    # shellcheck disable=SC2086
    if ! "$VENV/bin/python" -m pip install --no-input --disable-pip-version-check -q $pkg >>"$plog" 2>&1; then
      tail -n 30 "$plog" >&2
      die "pip install $pkg failed (full log: $plog)"
    fi
    printf '%s\n' "$pkg" >"$MARKER"
    venv_ok || { rm -f "$MARKER"; die "$pkg is not importable after install (pip log: $plog)"; }
    log "installed in $((SECONDS - t0)) s"
  fi
  if command -v flock >/dev/null 2>&1; then
    flock -u 9
    exec 9>&-
  fi
}

# /proc/PID/stat, counting fields from the one after "(comm)": 1 = state, 3 = pgrp, 20 = starttime
proc_field() {  # pid, index
  local s f
  s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  read -r -a f <<<"${s##*) }"
  printf '%s' "${f[$2 - 1]}"
}

group_alive() {  # pgid: any live (non-zombie) process in it?
  local g=$1 p s f
  for p in /proc/[0-9]*/stat; do
    s=$(cat "$p" 2>/dev/null) || continue
    read -r -a f <<<"${s##*) }"
    [ "${f[2]}" = "$g" ] && [ "${f[0]}" != Z ] && return 0
  done
  return 1
}

alive() {  # pid, recorded start time: same process (guards against PID reuse), not a zombie
  [ -n "$1" ] || return 1
  local st
  st=$(proc_field "$1" 1) || return 1
  [ "$st" != Z ] && [ "$(proc_field "$1" 20)" = "$2" ]
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# port_or_free PORT: PORT when it can be bound on 127.0.0.1, else a free port
port_or_free() {
  python3 - "$1" <<'EOF_PY'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
    print(sys.argv[1])
except OSError:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
EOF_PY
}

kill_group() {  # pgid [seconds, default 10]: TERM, wait, then KILL
  local g=$1 secs=${2:-10}
  kill -TERM -- "-$g" 2>/dev/null || true
  for _ in $(seq 1 $((secs * 5))); do
    group_alive "$g" || return 0
    sleep 0.2
  done
  log "process group $g still alive after $secs s; sending KILL"
  kill -KILL -- "-$g" 2>/dev/null || true
  for _ in $(seq 1 25); do
    group_alive "$g" || return 0
    sleep 0.2
  done
  return 1
}
