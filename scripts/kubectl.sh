#!/usr/bin/env bash
# kubectl.sh: make sure a kubectl is installed for the `kubectl apply --dry-run=client` test of
# `th submit --dry-run` (cli/tests/kubectl.rs), and print its path on stdout.
#
#   scripts/kubectl.sh             use the `kubectl` on PATH if there is one; otherwise install
#                                  Debian's `kubernetes-client` package (kubectl 1.20 on bookworm;
#                                  apt-get, with sudo only when not root), then print the path
#
# Idempotent: a second run finds the binary and only prints its path. Progress goes to stderr,
# so `TH_KUBECTL=$(scripts/kubectl.sh)` works.
#
# Environment:
#   TH_KUBECTL    a kubectl binary to use instead of the one on PATH (checked, not installed)
set -euo pipefail

log() { printf '[kubectl] %s\n' "$*" >&2; }

# The first line of `kubectl version --client` (kubectl 1.28+ has no --short).
version() { "$1" version --client 2>/dev/null | head -n 1 || true; }

found() {
  log "found $1 ($(version "$1"))"
  printf '%s\n' "$1"
  exit 0
}

if [[ -n ${TH_KUBECTL:-} ]]; then
  if [[ -x $TH_KUBECTL && -f $TH_KUBECTL ]]; then
    found "$TH_KUBECTL"
  fi
  log "TH_KUBECTL=$TH_KUBECTL is not an executable file"
  exit 1
fi

if BIN=$(command -v kubectl); then
  found "$BIN"
fi

PKG=kubernetes-client # Debian's kubectl (/usr/bin/kubectl); Debian has no package named kubectl
BIN=/usr/bin/kubectl

if ! command -v apt-get >/dev/null 2>&1; then
  log "kubectl is not on PATH and apt-get is not available: install kubectl and set TH_KUBECTL"
  exit 1
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  if ! command -v sudo >/dev/null 2>&1; then
    log "kubectl is not on PATH; installing $PKG needs root and sudo is not available"
    exit 1
  fi
  SUDO=(sudo)
fi

export DEBIAN_FRONTEND=noninteractive
log "kubectl is not on PATH: running ${SUDO[*]:+${SUDO[*]} }apt-get update"
"${SUDO[@]}" apt-get update -qq >&2
log "running ${SUDO[*]:+${SUDO[*]} }apt-get install -y --no-install-recommends $PKG"
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "$PKG" >&2

if [[ ! -x $BIN ]]; then
  log "apt-get installed $PKG but $BIN is still missing"
  exit 1
fi
log "installed $BIN ($(version "$BIN"))"
printf '%s\n' "$BIN"
