#!/usr/bin/env bash
# test.sh: THE test command (README, CI). From a clean checkout with the Rust toolchain, python3
# and pip, it runs in order and stops at the first failure:
#
#   1. cargo fmt --all -- --check
#   2. scripts/check-deploy.sh          the Helm chart, kustomize base, images and Argo CD health
#                                       check, rendered and validated (no cargo needed)
#   3. cargo clippy --workspace --all-targets -- -D warnings
#   4. cargo test --workspace "$@"      against a local S3 server (moto, scripts/s3-server.sh), a
#                                       Dask scheduler and worker (scripts/dask-cluster.sh), a Ray
#                                       head (scripts/ray-cluster.sh), a Spark master, worker and
#                                       Spark Connect server (scripts/spark-cluster.sh), and
#                                       with headless Chromium (scripts/chromium.sh) for `th report`
#                                       and kubectl (scripts/kubectl.sh) for `th submit --dry-run`,
#                                       and a real Kubernetes control plane (scripts/kube-cluster.sh:
#                                       etcd, kube-apiserver, kube-controller-manager v1.36, built
#                                       once from the Go module proxy) for tests/kube_*.rs, and
#                                       with pyarrow, duckdb, deltalake and pyiceberg
#                                       (scripts/py-tools.sh, TH_TEST_PYTHON) for fixtures and
#                                       reference statistics
#
# The profile format's JSON Schema is checked for drift by a test (cli/tests/cli.rs,
# schema_command_prints_the_published_schema): `th schema` must equal schema/profile.schema.json.
#
# The S3 server is installed in the background while fmt/clippy run (one-time pip install), is
# started just before the tests, and is stopped on every exit path (success, failure, Ctrl-C).
# The S3 credentials are set only in the environment of `cargo test`, and any AWS session or
# profile of the caller is removed from it, so tests never reach a real account.
#
#   scripts/test.sh                      everything
#   scripts/test.sh -p truthound-profile some_test -- --nocapture   args go to `cargo test`
#
# Environment: CARGO_TARGET_DIR is honoured (cargo reads it); TH_TEST_S3_ENDPOINT,
# TH_TEST_DASK_SCHEDULER, TH_TEST_RAY_ADDRESS, TH_TEST_SPARK_CONNECT, TH_TEST_KUBECONFIG and
# TH_TEST_PYTHON, if
# already set, are used as they are and no server is started; TH_CACHE is passed on to
# s3-server.sh, dask-cluster.sh, ray-cluster.sh, spark-cluster.sh and kube-cluster.sh.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# Nothing here reads input: whatever the caller's stdin holds must not reach a tool that does
# (`rustc -`, which cargo runs to learn the target, reads its source from stdin).
exec </dev/null
S3=$ROOT/scripts/s3-server.sh
DASK=$ROOT/scripts/dask-cluster.sh
RAY=$ROOT/scripts/ray-cluster.sh
SPARK=$ROOT/scripts/spark-cluster.sh
KUBE=$ROOT/scripts/kube-cluster.sh

T_ALL=${EPOCHREALTIME/[.,]/}
now_us() { echo "${EPOCHREALTIME/[.,]/}"; }
secs() { local d=$(($(now_us) - $1)); printf '%d.%01d' $((d / 1000000)) $((d % 1000000 / 100000)); }
say() { printf '\n==> %s\n' "$*" >&2; }

CURRENT=""
# step NAME CMD...: run one step with a header and its duration; a failing step ends the script
step() {
  local name=$1 t0
  shift
  CURRENT=$name
  t0=$(now_us)
  say "[$name] $*"
  if "$@"; then
    printf '==> [%s] ok (%ss)\n' "$name" "$(secs "$t0")" >&2
  else
    local rc=$?
    printf '==> [%s] FAILED with exit code %d (%ss)\n' "$name" "$rc" "$(secs "$t0")" >&2
    exit "$rc"
  fi
  CURRENT=""
}

# ---- S3 server lifecycle -------------------------------------------------------------------
S3_RUN=""
INSTALL_PID=""
DASK_RUN=""
DASK_INSTALL_PID=""
RAY_RUN=""
RAY_INSTALL_PID=""
SPARK_RUN=""
SPARK_INSTALL_PID=""
KUBE_RUN=""
KUBE_INSTALL_PID=""
PYTOOLS_RUN=""
PYTOOLS_INSTALL_PID=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  # an unfinished one-time install is left to complete on its own (output goes to a log, so it
  # holds no pipe of the caller open); a half-done venv would be redone next time anyway
  if [ -n "$S3_RUN" ]; then
    S3_RUN_DIR=$S3_RUN "$S3" stop || true
    rm -rf "$S3_RUN"
  fi
  if [ -n "$DASK_RUN" ]; then
    DASK_RUN_DIR=$DASK_RUN "$DASK" stop || true
    rm -rf "$DASK_RUN"
  fi
  if [ -n "$RAY_RUN" ]; then
    RAY_RUN_DIR=$RAY_RUN "$RAY" stop || true
    rm -rf "$RAY_RUN"
  fi
  if [ -n "$SPARK_RUN" ]; then
    SPARK_RUN_DIR=$SPARK_RUN "$SPARK" stop || true
    rm -rf "$SPARK_RUN"
  fi
  if [ -n "$KUBE_RUN" ]; then
    KUBE_RUN_DIR=$KUBE_RUN "$KUBE" stop || true
    rm -rf "$KUBE_RUN"
  fi
  [ -z "$PYTOOLS_RUN" ] || rm -rf "$PYTOOLS_RUN"
  if [ "$rc" -eq 0 ]; then
    printf '\n==> all steps passed (%ss)\n' "$(secs "$T_ALL")" >&2
  else
    printf '\n==> FAILED%s, exit code %d (%ss)\n' "${CURRENT:+ in step [$CURRENT]}" "$rc" "$(secs "$T_ALL")" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ -z "${TH_TEST_S3_ENDPOINT:-}" ]; then
  # a private run dir: several test runs on one machine each get their own server
  S3_RUN=$(mktemp -d "${TMPDIR:-/tmp}/th-test-s3.XXXXXX")
  export S3_RUN_DIR=$S3_RUN
  # one-time pip install overlaps with fmt/clippy; its output goes to a log
  "$S3" install >"$S3_RUN/install.log" 2>&1 &
  INSTALL_PID=$!
fi

# install_in_background NAME SCRIPT: a private run dir ($NAME_RUN: several test runs on one
# machine each get their own servers) and the script's one-time install in the background
# ($NAME_INSTALL_PID), overlapping with fmt/clippy; its output goes to a log in the run dir.
install_in_background() {
  local name=$1 script=$2 dir lower
  lower=$(printf '%s' "$name" | tr '[:upper:]' '[:lower:]')
  dir=$(mktemp -d "${TMPDIR:-/tmp}/th-test-$lower.XXXXXX")
  "$script" install >"$dir/install.log" 2>&1 &
  printf -v "${name}_INSTALL_PID" '%s' "$!"
  printf -v "${name}_RUN" '%s' "$dir"
}

# wait_install PID RUN: waits for a background install (if any); on failure prints its log.
wait_install() {
  [ -n "$1" ] || return 0
  local rc=0
  wait "$1" || rc=$?
  [ "$rc" -eq 0 ] || cat "$2/install.log" >&2
  return "$rc"
}

# start_cluster SCRIPT RUN_DIR_VAR RUN VAR: `SCRIPT start` in its run dir; it prints VAR=VALUE,
# which is exported for the tests.
start_cluster() {
  local script=$1 dirvar=$2 dir=$3 var=$4 line
  line=$(env "$dirvar=$dir" "$script" start) || return
  export "$var=${line#"$var="}"
  echo "$var=${!var}" >&2
}

# The Dask cluster (scheduler + 1 worker on 127.0.0.1) for tests/dask.rs and the operator's.
[ -n "${TH_TEST_DASK_SCHEDULER:-}" ] || install_in_background DASK "$DASK"
start_dask() {
  wait_install "$DASK_INSTALL_PID" "$DASK_RUN" || return
  start_cluster "$DASK" DASK_RUN_DIR "$DASK_RUN" TH_TEST_DASK_SCHEDULER
}

# The Ray head (2 CPUs, dashboard with the Jobs API on 127.0.0.1) for tests/ray.rs and the
# operator's. Its sockets live under the run dir, so keep TMPDIR short (paths under ~107 bytes).
[ -n "${TH_TEST_RAY_ADDRESS:-}" ] || install_in_background RAY "$RAY"
start_ray() {
  wait_install "$RAY_INSTALL_PID" "$RAY_RUN" || return
  start_cluster "$RAY" RAY_RUN_DIR "$RAY_RUN" TH_TEST_RAY_ADDRESS
}

# The Spark cluster (master, worker and Spark Connect server on 127.0.0.1; needs Java 17, which
# spark-cluster.sh installs from Debian's packages when missing and running as root) for
# tests/spark.rs and the operator's.
[ -n "${TH_TEST_SPARK_CONNECT:-}" ] || install_in_background SPARK "$SPARK"
start_spark() {
  wait_install "$SPARK_INSTALL_PID" "$SPARK_RUN" || return
  start_cluster "$SPARK" SPARK_RUN_DIR "$SPARK_RUN" TH_TEST_SPARK_CONNECT
}

# The Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager on 127.0.0.1) for
# tests/kube_*.rs. Its one-time Go build (~15 min cold on 2 cores) overlaps with the cargo build;
# the kubectl built beside it is exported for the tests as TH_TEST_KUBE_KUBECTL.
[ -n "${TH_TEST_KUBECONFIG:-}" ] || install_in_background KUBE "$KUBE"
start_kube() {
  wait_install "$KUBE_INSTALL_PID" "$KUBE_RUN" || return
  start_cluster "$KUBE" KUBE_RUN_DIR "$KUBE_RUN" TH_TEST_KUBECONFIG
}
kube_kubectl() {
  TH_TEST_KUBE_KUBECTL=$("$KUBE" kubectl) || return
  export TH_TEST_KUBE_KUBECTL
}

# The Python data tools (pyarrow, duckdb, deltalake, pyiceberg: scripts/py-tools.sh) that tests
# write fixtures with and compare against, exported as TH_TEST_PYTHON.
PYTOOLS=$ROOT/scripts/py-tools.sh
[ -n "${TH_TEST_PYTHON:-}" ] || install_in_background PYTOOLS "$PYTOOLS"
py_tools() {
  wait_install "$PYTOOLS_INSTALL_PID" "$PYTOOLS_RUN" || return
  TH_TEST_PYTHON=$("$PYTOOLS" python) || return
  export TH_TEST_PYTHON
  echo "TH_TEST_PYTHON=$TH_TEST_PYTHON" >&2
}

start_s3() {
  wait_install "$INSTALL_PID" "$S3_RUN" || return
  local line
  line=$("$S3" start) || return
  TH_TEST_S3_ENDPOINT=${line#export TH_TEST_S3_ENDPOINT=}
  echo "TH_TEST_S3_ENDPOINT=$TH_TEST_S3_ENDPOINT" >&2
}

ensure_component() {  # cargo subcommand, rustup component
  cargo "$1" --version >/dev/null 2>&1 && return 0
  if command -v rustup >/dev/null 2>&1; then
    echo "cargo $1 missing; rustup component add $2" >&2
    rustup component add "$2"
  else
    echo "cargo $1 is not installed (rustup component add $2)" >&2
    return 1
  fi
}

run_tests() {
  env -u AWS_SESSION_TOKEN -u AWS_SECURITY_TOKEN -u AWS_PROFILE -u AWS_ENDPOINT -u AWS_ENDPOINT_URL \
    -u RAY_ADDRESS -u DASK_SCHEDULER_ADDRESS -u SPARK_CONNECT_URL -u KUBECONFIG \
    TH_TEST_S3_ENDPOINT="$TH_TEST_S3_ENDPOINT" \
    TH_TEST_DASK_SCHEDULER="$TH_TEST_DASK_SCHEDULER" \
    TH_TEST_RAY_ADDRESS="$TH_TEST_RAY_ADDRESS" \
    TH_TEST_SPARK_CONNECT="$TH_TEST_SPARK_CONNECT" \
    TH_TEST_KUBECONFIG="$TH_TEST_KUBECONFIG" TH_TEST_KUBE_KUBECTL="$TH_TEST_KUBE_KUBECTL" \
    TH_TEST_PYTHON="$TH_TEST_PYTHON" \
    AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
    AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 \
    AWS_ALLOW_HTTP=true AWS_VIRTUAL_HOSTED_STYLE_REQUEST=false AWS_EC2_METADATA_DISABLED=true \
    cargo test --workspace "$@"
}

echo "target dir: ${CARGO_TARGET_DIR:-$ROOT/target}" >&2
step fmt-toolchain ensure_component fmt rustfmt
step fmt cargo fmt --all -- --check
step deploy scripts/check-deploy.sh
step clippy-toolchain ensure_component clippy clippy
step clippy cargo clippy --workspace --all-targets -- -D warnings
if [ -z "${TH_TEST_S3_ENDPOINT:-}" ]; then
  step s3-start start_s3
else
  echo "using the S3 endpoint given in TH_TEST_S3_ENDPOINT=$TH_TEST_S3_ENDPOINT" >&2
fi
if [ -z "${TH_TEST_DASK_SCHEDULER:-}" ]; then
  step dask-start start_dask
else
  echo "using the Dask scheduler given in TH_TEST_DASK_SCHEDULER=$TH_TEST_DASK_SCHEDULER" >&2
fi
if [ -z "${TH_TEST_RAY_ADDRESS:-}" ]; then
  step ray-start start_ray
else
  echo "using the Ray dashboard given in TH_TEST_RAY_ADDRESS=$TH_TEST_RAY_ADDRESS" >&2
fi
if [ -z "${TH_TEST_SPARK_CONNECT:-}" ]; then
  step spark-start start_spark
else
  echo "using the Spark Connect server given in TH_TEST_SPARK_CONNECT=$TH_TEST_SPARK_CONNECT" >&2
fi
if [ -z "${TH_TEST_KUBECONFIG:-}" ]; then
  step kube-start start_kube
else
  echo "using the control plane given in TH_TEST_KUBECONFIG=$TH_TEST_KUBECONFIG" >&2
fi
step kube-kubectl kube_kubectl
if [ -z "${TH_TEST_PYTHON:-}" ]; then
  step py-tools py_tools
else
  echo "using the Python tools given in TH_TEST_PYTHON=$TH_TEST_PYTHON" >&2
fi
# Headless Chromium for the `th report` browser test (cli/tests/report.rs); installed from
# Debian's packages when missing. Assignment and export apart, so that a failure stops the script.
ensure_chromium() {
  # `|| return`: `step` runs this inside `if`, where `set -e` does not stop a failed assignment
  TH_CHROMIUM=$(scripts/chromium.sh) || return
  export TH_CHROMIUM
  export TH_ARTIFACTS_DIR=${TH_ARTIFACTS_DIR:-$ROOT/artifacts}
}
step chromium ensure_chromium
# kubectl for the `kubectl apply --dry-run=client` test of `th submit --dry-run`
# (cli/tests/kubectl.rs): the one on PATH, else Debian's kubernetes-client, installed when missing.
ensure_kubectl() {
  TH_KUBECTL=$(scripts/kubectl.sh) || return
  export TH_KUBECTL
}
step kubectl ensure_kubectl
step test run_tests "$@"
