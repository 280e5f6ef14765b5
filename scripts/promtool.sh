#!/usr/bin/env bash
# promtool.sh: make sure Prometheus' `promtool` is installed for scripts/check-deploy.sh's
# monitoring check (the chart's PrometheusRule and the Grafana dashboard's PromQL), and print its
# path on stdout.
#
#   scripts/promtool.sh            use the `promtool` on PATH if there is one; otherwise install
#                                  Debian's `prometheus` package (promtool 2.42 on bookworm, at
#                                  /usr/bin/promtool; apt-get, with sudo only when not root), then
#                                  print the path
#
# Idempotent: a second run finds the binary and only prints its path. Progress goes to stderr,
# so `TH_PROMTOOL=$(scripts/promtool.sh)` works. The package also ships the Prometheus server;
# installing it in a container starts nothing (no init system), and nothing here runs it.
#
# Environment:
#   TH_PROMTOOL   a promtool binary to use instead of the one on PATH (checked, not installed)
set -euo pipefail

log() { printf '[promtool] %s\n' "$*" >&2; }

version() { "$1" --version 2>&1 | head -n 1 || true; }

found() {
  log "found $1 ($(version "$1"))"
  printf '%s\n' "$1"
  exit 0
}

if [[ -n ${TH_PROMTOOL:-} ]]; then
  if [[ -x $TH_PROMTOOL && -f $TH_PROMTOOL ]]; then
    found "$TH_PROMTOOL"
  fi
  log "TH_PROMTOOL=$TH_PROMTOOL is not an executable file"
  exit 1
fi

if BIN=$(command -v promtool); then
  found "$BIN"
fi

PKG=prometheus # Debian ships promtool in the server's package; there is no promtool package
BIN=/usr/bin/promtool

if ! command -v apt-get >/dev/null 2>&1; then
  log "promtool is not on PATH and apt-get is not available: install Prometheus' promtool and set TH_PROMTOOL"
  exit 1
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  if ! command -v sudo >/dev/null 2>&1; then
    log "promtool is not on PATH; installing $PKG needs root and sudo is not available"
    exit 1
  fi
  SUDO=(sudo)
fi

export DEBIAN_FRONTEND=noninteractive
log "promtool is not on PATH: running ${SUDO[*]:+${SUDO[*]} }apt-get update"
"${SUDO[@]}" apt-get update -qq >&2
log "running ${SUDO[*]:+${SUDO[*]} }apt-get install -y --no-install-recommends $PKG"
# (its postinst asks invoke-rc.d to start the server; in a container policy-rc.d declines, which
# the install reports and survives)
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "$PKG" >&2

if [[ ! -x $BIN ]]; then
  log "apt-get install $PKG did not leave $BIN"
  exit 1
fi
log "installed $BIN ($(version "$BIN"))"
printf '%s\n' "$BIN"
