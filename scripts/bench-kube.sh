#!/usr/bin/env bash
# bench-kube.sh: the reconcile benchmark against a real kube-apiserver. N ProfileJobs in one
# namespace, created first (the operator stopped), then reconciled by a release build of
# th-operator authenticated as the chart's ServiceAccount with the chart's RBAC; it reports the
# time until every job has its Accepted condition and until every one has settled, the operator's peak RSS (VmHWM), and the
# apiserver requests the operator made per job (counted from the apiserver's audit log).
#
#   scripts/bench-kube.sh [N]          N ProfileJobs (default 1000)
#
# Starts its own control plane (scripts/kube-cluster.sh, with KUBE_AUDIT=1) and S3 server
# (scripts/s3-server.sh) in a temporary run directory, and stops both on exit. Every job plans
# the same 3-file Parquet dataset in the S3 server, so planning (listing, footers) is part of
# what is measured, as in a real cluster.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${1:-1000}
NS=bench
RUN=$(mktemp -d "${TMPDIR:-/tmp}/th-bench-kube.XXXXXX")
export KUBE_RUN_DIR=$RUN/kube S3_RUN_DIR=$RUN/s3
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OP_PID=""

log() { printf '[bench-kube] %s\n' "$*" >&2; }
cleanup() {
  [ -z "$OP_PID" ] || kill "$OP_PID" 2>/dev/null || true
  "$ROOT/scripts/kube-cluster.sh" stop >/dev/null 2>&1 || true
  "$ROOT/scripts/s3-server.sh" stop >/dev/null 2>&1 || true
  rm -rf "$RUN"
}
trap cleanup EXIT

log "building th-operator (release)"
cargo build --release -q -p truthound-operator --bin th-operator
OPERATOR=$TARGET/release/th-operator

KUBECONFIG_LINE=$(KUBE_AUDIT=1 "$ROOT/scripts/kube-cluster.sh" start)
ADMIN=${KUBECONFIG_LINE#TH_TEST_KUBECONFIG=}
KUBECTL=$("$ROOT/scripts/kube-cluster.sh" kubectl)
k() { "$KUBECTL" --kubeconfig "$ADMIN" "$@"; }
S3_LINE=$("$ROOT/scripts/s3-server.sh" start)
S3=${S3_LINE#export TH_TEST_S3_ENDPOINT=}

# the dataset: three Parquet files of the bundled sample, uploaded with moto's own boto3
CACHE=${TH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/truthound}
"$CACHE/venv-moto/bin/python" - "$S3" "$ROOT/examples/sample/events" <<'PY'
import sys, pathlib, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], aws_access_key_id="test",
                  aws_secret_access_key="test", region_name="us-east-1")
s3.create_bucket(Bucket="bench")
for f in sorted(pathlib.Path(sys.argv[2]).glob("*.parquet")):
    s3.upload_file(str(f), "bench", f"data/{f.name}")
PY

k apply --server-side --field-manager bench -f "$ROOT/crds/profilejob.yaml" -f "$ROOT/deploy/namespace.yaml" \
  -f "$ROOT/deploy/operator.yaml" >/dev/null
k wait --for=condition=Established crd/profilejobs.truthound.io --timeout=60s >/dev/null
k create namespace "$NS" >/dev/null
k -n "$NS" create secret generic s3-credentials --from-literal=AWS_ACCESS_KEY_ID=test \
  --from-literal=AWS_SECRET_ACCESS_KEY=test >/dev/null
TOKEN=$(k -n truthound-system create token truthound-operator --duration=2h)
SERVER=$(k config view --raw -o jsonpath='{.clusters[0].cluster.server}')
CA=$(k config view --raw -o jsonpath='{.clusters[0].cluster.certificate-authority}')
cat >"$RUN/operator.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "$SERVER", certificate-authority: "$CA"}}]
users: [{name: u, user: {token: "$TOKEN"}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
EOF

for i in $(seq 1 "$N"); do
  cat <<EOF
---
apiVersion: truthound.io/v1alpha1
kind: ProfileJob
metadata: {name: job-$i}
spec:
  dataset:
    uri: s3://bench/data/
    options: {endpoint: "$S3", region: us-east-1, allowHttp: true}
    credentialsSecretRef: {name: s3-credentials}
  output: {uri: "s3://bench/profiles/job-$i.json"}
  suspend: true
EOF
done >"$RUN/jobs.yaml"

head -c 48 /dev/urandom | base64 >"$RUN/key"
# Created before the operator starts, so that what is timed is the operator's work alone (a
# `kubectl create` of 1,000 objects takes longer than reconciling them).
log "creating $N ProfileJobs (suspended: planned and accepted, their Jobs created suspended)"
k -n "$NS" create -f "$RUN/jobs.yaml" >/dev/null
log "starting th-operator"
t0=${EPOCHREALTIME/[.,]/}
env -i PATH="$PATH" KUBECONFIG="$RUN/operator.kubeconfig" POD_NAME=bench POD_NAMESPACE=truthound-system \
  TH_WATCH_NAMESPACE="$NS" TH_METRICS_ADDR=127.0.0.1:0 TH_PROGRESS_ADDR=127.0.0.1:0 \
  TH_PROGRESS_ENDPOINT=http://127.0.0.1:1 TH_PROGRESS_KEY_FILE="$RUN/key" TH_LOG_FORMAT=text \
  TH_LOG=warn "$OPERATOR" >"$RUN/operator.log" 2>&1 &
OP_PID=$!
while :; do
  accepted=$(k -n "$NS" get pj -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Accepted")].status}{"\n"}{end}' |
    grep -c True || true)
  [ "$accepted" -ge "$N" ] && break
  kill -0 "$OP_PID" 2>/dev/null || { tail -n 30 "$RUN/operator.log" >&2; exit 1; }
  sleep 0.2
done
t1=${EPOCHREALTIME/[.,]/}
# Settled: each job planned, its worker Job created (suspended) and its phase Suspended.
while :; do
  settled=$(k -n "$NS" get pj -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' | grep -c Suspended || true)
  [ "$settled" -ge "$N" ] && break
  kill -0 "$OP_PID" 2>/dev/null || { tail -n 30 "$RUN/operator.log" >&2; exit 1; }
  sleep 0.5
done
t2=${EPOCHREALTIME/[.,]/}
hwm=$(sed -n 's/^VmHWM:\s*//p' "/proc/$OP_PID/status")
user=system:serviceaccount:truthound-system:truthound-operator
requests=$(grep -c "\"username\":\"$user\"" "$KUBE_RUN_DIR/audit.log" || true)
breakdown=$(grep "\"username\":\"$user\"" "$KUBE_RUN_DIR/audit.log" |
  python3 -c '
import json, sys, collections
c = collections.Counter()
for line in sys.stdin:
    e = json.loads(line)
    r = e.get("objectRef", {})
    res = r.get("resource", "?") + ("/" + r["subresource"] if r.get("subresource") else "")
    c[(e["verb"], res)] += 1
print(", ".join(f"{v} {r}: {n}" for (v, r), n in c.most_common()))')
printf 'ProfileJobs:             %d\n' "$N"
printf 'all Accepted after:      %d ms from the operator'"'"'s start (process start, cache sync, %d reconciles)\n' $(((t1 - t0) / 1000)) "$N"
printf 'all settled after:       %d ms (planned, worker Job created suspended, phase Suspended)\n' $(((t2 - t0) / 1000))
printf 'operator peak RSS:       %s\n' "$hwm"
printf 'operator API requests:   %d (%s per job)\n' "$requests" "$(python3 -c "print(round($requests / $N, 2))")"
printf 'by verb and resource:    %s\n' "$breakdown"
