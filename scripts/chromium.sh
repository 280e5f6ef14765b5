#!/usr/bin/env bash
# chromium.sh: make sure headless Chromium is installed for the `th report` browser tests
# (cli/tests/report.rs), and print its path on stdout.
#
#   scripts/chromium.sh            install Debian's `chromium` package if /usr/bin/chromium is
#                                  missing (apt-get, with sudo only when not root), then print
#                                  the path; does nothing but print when it is already there
#
# Idempotent: a second run finds the binary and only prints its path. Progress goes to stderr,
# so `export TH_CHROMIUM=$(scripts/chromium.sh)` works.
#
# Environment:
#   TH_CHROMIUM   a Chromium binary to use instead of /usr/bin/chromium (checked, not installed)
set -euo pipefail

log() { printf '[chromium] %s\n' "$*" >&2; }

BIN=${TH_CHROMIUM:-/usr/bin/chromium}

if [[ -x $BIN ]]; then
  log "found $BIN ($("$BIN" --version 2>/dev/null || echo 'version unknown'))"
  printf '%s\n' "$BIN"
  exit 0
fi

if [[ -n ${TH_CHROMIUM:-} ]]; then
  log "TH_CHROMIUM=$TH_CHROMIUM is not an executable file"
  exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
  log "/usr/bin/chromium is missing and apt-get is not available: install Chromium and set TH_CHROMIUM"
  exit 1
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  if ! command -v sudo >/dev/null 2>&1; then
    log "/usr/bin/chromium is missing; installing needs root and sudo is not available"
    exit 1
  fi
  SUDO=(sudo)
fi

export DEBIAN_FRONTEND=noninteractive
log "/usr/bin/chromium is missing: running ${SUDO[*]:+${SUDO[*]} }apt-get update"
"${SUDO[@]}" apt-get update -qq >&2
log "running ${SUDO[*]:+${SUDO[*]} }apt-get install -y --no-install-recommends chromium"
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends chromium >&2

if [[ ! -x $BIN ]]; then
  log "apt-get finished but $BIN is still missing"
  exit 1
fi
log "installed $BIN ($("$BIN" --version 2>/dev/null || echo 'version unknown'))"
printf '%s\n' "$BIN"
