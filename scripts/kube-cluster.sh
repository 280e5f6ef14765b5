#!/usr/bin/env bash
# kube-cluster.sh: a real, throw-away Kubernetes control plane on 127.0.0.1 for the operator's
# control-plane tests (tests/kube_*.rs): etcd, kube-apiserver and kube-controller-manager. There is
# no scheduler and no kubelet: the test support's node agent (th-test-node) binds pods and runs
# their commands as local processes.
#
#   scripts/kube-cluster.sh install   install etcd (Debian's etcd-server) and build kube-apiserver,
#                                     kube-controller-manager and kubectl v$KUBE_VERSION from the Go
#                                     module proxy (once; cached under $TH_CACHE/kube)
#   scripts/kube-cluster.sh start     make certificates, start the three servers, wait until the
#                                     apiserver is ready and the controllers work, and print
#                                     `TH_TEST_KUBECONFIG=<admin kubeconfig>` on stdout
#   scripts/kube-cluster.sh env       print that line for the running control plane
#   scripts/kube-cluster.sh kubectl   print the path of the kubectl built beside the servers
#   scripts/kube-cluster.sh status    exit 0 if the recorded servers are running
#   scripts/kube-cluster.sh stop      stop exactly the recorded process groups
#
# Why built from source: the server half of Kubernetes is not packaged for Debian and no other
# download is reachable here, but k8s.io/kubernetes is a Go module. Its go.mod points the staging
# modules (k8s.io/api, client-go, ...) at a ./staging folder that the module zip does not carry,
# so scripts/kube/go.mod requires it and pins each staging module to its published v0.36.x.
# `go` on PATH must be 1.21+ (older ones cannot switch toolchains); the go.mod's `go 1.26.0`
# makes an older 1.2x fetch the golang.org/toolchain module from the proxy by itself.
#
# The servers: RBAC on (authorization mode RBAC, admin = system:masters client certificate);
# service-account tokens signed with a key made at start, so the TokenRequest API works; the
# controller-manager runs the Job, garbage-collector, namespace, TTL-after-finished and
# service-account controllers, each with its own service account's credentials, as in a real
# cluster. Each server runs in its own session (setsid): its PID is its process group, and `stop`
# ends exactly those groups.
#
# Environment:
#   TH_CACHE        cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/truthound)
#   KUBE_RUN_DIR    certificates, kubeconfigs, etcd data, logs and the state file (default
#                   $TH_CACHE/run/kube); a fresh directory per caller runs control planes side by
#                   side
#   KUBE_WAIT_S     readiness bound in seconds (default 120)
#   KUBE_AUDIT      1: the apiserver writes an audit log of every request's metadata to
#                   $KUBE_RUN_DIR/audit.log (who asked what; scripts/bench-kube.sh counts the
#                   operator's requests with it)
#
# Only stdout carries the TH_TEST_KUBECONFIG line; progress and errors go to stderr.
set -euo pipefail

SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${TH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/truthound}
MODULE_DIR=$SCRIPTS/kube
KUBE_VERSION=$(sed -n 's/^require k8s.io\/kubernetes v//p' "$MODULE_DIR/go.mod")
KDIR=$CACHE/kube
BIN=$KDIR/bin-v$KUBE_VERSION
RUN_DIR=${KUBE_RUN_DIR:-$CACHE/run/kube}
STATE=$RUN_DIR/state
HOST=127.0.0.1
WAIT_S=${KUBE_WAIT_S:-120}
# The servers' Service range: unused here (no kube-proxy, nothing dials a ClusterIP), but required.
SERVICE_CIDR=10.96.0.0/24

SERVICE=kube-cluster
. "$SCRIPTS/lib/service.sh"

# ---- install -----------------------------------------------------------------------------------

binaries_ok() {
  local b
  for b in kube-apiserver kube-controller-manager kubectl; do
    [ -x "$BIN/$b" ] || return 1
  done
  [ "$(cat "$BIN/.go.sum.sha256" 2>/dev/null)" = "$(sha256sum <"$MODULE_DIR/go.sum" | cut -d' ' -f1)" ]
}

install_etcd() {
  command -v etcd >/dev/null 2>&1 && return 0
  command -v apt-get >/dev/null 2>&1 || die "etcd is not on PATH and apt-get is not available: install etcd 3.4+"
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  log "installing Debian's etcd-server (once)"
  export DEBIAN_FRONTEND=noninteractive
  # other installs (Chromium, Java) may hold the dpkg lock: wait for it rather than fail
  "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
  # --no-install-recommends; policy-rc.d-free machines may try to start the service: harmless,
  # this script runs its own etcd on its own ports
  "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends etcd-server >&2
  command -v etcd >/dev/null 2>&1 || die "apt-get installed etcd-server but etcd is not on PATH"
}

build_binaries() {
  binaries_ok && return 0
  command -v go >/dev/null 2>&1 || die "go is not on PATH (Go 1.21+ is needed to build Kubernetes)"
  local t0=$SECONDS blog=$KDIR/build.log src=$KDIR/src
  log "building kube-apiserver, kube-controller-manager and kubectl v$KUBE_VERSION (once; ~15 min cold on 2 cores; log: $blog)"
  rm -rf "$src" && mkdir -p "$src" "$BIN"
  cp "$MODULE_DIR/go.mod" "$MODULE_DIR/go.sum" "$MODULE_DIR/tools.go" "$src/"
  # the version the binaries report (hack/lib/version.sh sets the same variables)
  local v=v$KUBE_VERSION minor
  minor=$(printf '%s' "$KUBE_VERSION" | cut -d. -f2)
  local ld="-s -w"
  ld+=" -X k8s.io/component-base/version.gitVersion=$v -X k8s.io/component-base/version.gitMajor=1"
  ld+=" -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
  ld+=" -X k8s.io/client-go/pkg/version.gitVersion=$v -X k8s.io/client-go/pkg/version.gitMajor=1"
  ld+=" -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  if ! (cd "$src" &&
    GOMODCACHE=$KDIR/gomod GOCACHE=$KDIR/gocache GOFLAGS=-modcacherw GOTOOLCHAIN=auto CGO_ENABLED=0 \
      go build -trimpath -ldflags "$ld" -o "$BIN/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kubectl) >"$blog" 2>&1; then
    tail -n 30 "$blog" >&2
    die "go build failed (full log: $blog)"
  fi
  sha256sum <"$MODULE_DIR/go.sum" | cut -d' ' -f1 >"$BIN/.go.sum.sha256"
  # Go's build cache (~3 GB) serves only another build of the same sources, and a new
  # Kubernetes version changes them all; the module cache (~0.8 GB) is kept: a version bump
  # downloads only what changed.
  rm -rf "$KDIR/gocache" "$src"
  log "built in $((SECONDS - t0)) s: $("$BIN/kube-apiserver" --version)"
}

cmd_install() {
  mkdir -p "$KDIR"
  install_etcd
  binaries_ok && return 0
  local lock=$KDIR/install.lock
  exec 8>"$lock"
  flock 8
  build_binaries
  flock -u 8
  exec 8>&-
}

# ---- certificates and kubeconfigs --------------------------------------------------------------

# cert NAME SUBJECT [SAN]: a key and a certificate signed by the run's CA
cert() {
  local name=$1 subj=$2 san=${3:-} d=$RUN_DIR/pki
  openssl req -new -newkey rsa:2048 -nodes -keyout "$d/$name.key" -subj "$subj" -out "$d/$name.csr" 2>/dev/null
  local ext=$d/$name.ext
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [ -n "$san" ]; then
      echo "extendedKeyUsage=serverAuth"
      echo "subjectAltName=$san"
    else
      echo "extendedKeyUsage=clientAuth"
    fi
  } >"$ext"
  openssl x509 -req -in "$d/$name.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
    -days 30 -sha256 -extfile "$ext" -out "$d/$name.crt" 2>/dev/null
}

make_pki() {
  local d=$RUN_DIR/pki
  mkdir -p "$d"
  openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$d/ca.key" -days 30 -sha256 \
    -subj "/CN=truthound-test-ca" -out "$d/ca.crt" 2>/dev/null
  cert apiserver "/CN=kube-apiserver" \
    "IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.96.0.1"
  cert admin "/O=system:masters/CN=truthound-test-admin"
  cert controller-manager "/CN=system:kube-controller-manager"
  openssl genrsa -out "$d/sa.key" 2048 2>/dev/null
  openssl rsa -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
}

# kubeconfig FILE USER: a kubeconfig for the apiserver at $APISERVER with USER's certificate
kubeconfig() {
  local d=$RUN_DIR/pki
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: truthound-test
  cluster:
    server: https://$HOST:$APISERVER_PORT
    certificate-authority: $d/ca.crt
users:
- name: $2
  user:
    client-certificate: $d/$2.crt
    client-key: $d/$2.key
contexts:
- name: truthound-test
  context: {cluster: truthound-test, user: $2}
current-context: truthound-test
EOF
}

# ---- processes ---------------------------------------------------------------------------------

read_state() {  # sets APISERVER_PORT and NAME_PID / NAME_START for etcd, apiserver, kcm
  [ -f "$STATE" ] || return 1
  # shellcheck disable=SC1090  # written by this script, KEY=VALUE lines only
  . "$STATE"
  [ -n "${APISERVER_PORT:-}" ]
}

running() {
  read_state || return 1
  alive "${ETCD_PID:-}" "${ETCD_START:-}" && alive "${APISERVER_PID:-}" "${APISERVER_START:-}" &&
    alive "${KCM_PID:-}" "${KCM_START:-}"
}

# launch NAME LOG CMD...: start CMD in its own session and record its PID and start time
launch() {
  local name=$1 logf=$2 pid
  shift 2
  setsid "$@" >"$logf" 2>&1 </dev/null &
  pid=$!
  printf '%s_PID=%s\n%s_START=%s\n' "$name" "$pid" "$name" "$(proc_field "$pid" 20 || true)" >>"$STATE"
  printf -v "${name}_PID" '%s' "$pid"
}

stop_recorded() {
  read_state || return 0
  local n pid start
  for n in KCM APISERVER ETCD; do
    pid=${n}_PID start=${n}_START
    if alive "${!pid:-}" "${!start:-}"; then kill_group "${!pid}" || log "$n group ${!pid} did not exit"; fi
  done
  rm -f "$STATE"
}

env_line() { printf 'TH_TEST_KUBECONFIG=%s\n' "$RUN_DIR/admin.kubeconfig"; }

kctl() { "$BIN/kubectl" --kubeconfig "$RUN_DIR/admin.kubeconfig" "$@"; }

# wait_for WHAT CMD...: retries CMD every 0.5 s until it succeeds, or dies after $WAIT_S
wait_for() {
  local what=$1 t0=$SECONDS
  shift
  until "$@" >/dev/null 2>&1; do
    local n
    for n in ETCD APISERVER KCM; do
      local pid=${n}_PID
      if [ -n "${!pid:-}" ] && { ! kill -0 "${!pid}" 2>/dev/null || [ "$(proc_field "${!pid}" 1)" = Z ]; }; then
        log "$n exited while waiting for $what; last log lines:"
        tail -n 20 "$RUN_DIR/$(printf '%s' "$n" | tr '[:upper:]' '[:lower:]').log" >&2 || true
        stop_recorded
        exit 1
      fi
    done
    if [ $((SECONDS - t0)) -ge "$WAIT_S" ]; then
      log "no $what within $WAIT_S s; last log lines:"
      tail -n 10 "$RUN_DIR"/*.log >&2 || true
      stop_recorded
      exit 1
    fi
    sleep 0.5
  done
}

cmd_start() {
  if running; then
    log "already running (apiserver on https://$HOST:$APISERVER_PORT)"
    env_line
    return 0
  fi
  stop_recorded
  cmd_install
  local t0=$SECONDS etcd_port etcd_peer
  rm -rf "$RUN_DIR/pki" "$RUN_DIR/etcd"
  mkdir -p "$RUN_DIR"
  make_pki
  etcd_port=$(free_port)
  etcd_peer=$(free_port)
  APISERVER_PORT=$(free_port)
  printf 'APISERVER_PORT=%s\n' "$APISERVER_PORT" >"$STATE"
  kubeconfig "$RUN_DIR/admin.kubeconfig" admin
  kubeconfig "$RUN_DIR/controller-manager.kubeconfig" controller-manager

  # etcd 3.4 has no --unsafe-no-fsync; its data is throw-away, a tmpfs keeps fsync cheap
  local etcd_dir=$RUN_DIR/etcd
  if [ -d /dev/shm ] && [ -w /dev/shm ]; then
    etcd_dir=$(mktemp -d /dev/shm/th-etcd.XXXXXX)
    ln -sfn "$etcd_dir" "$RUN_DIR/etcd"
  fi
  launch ETCD "$RUN_DIR/etcd.log" etcd --name th-test --data-dir "$etcd_dir" \
    --listen-client-urls "http://$HOST:$etcd_port" --advertise-client-urls "http://$HOST:$etcd_port" \
    --listen-peer-urls "http://$HOST:$etcd_peer" --initial-advertise-peer-urls "http://$HOST:$etcd_peer" \
    --initial-cluster "th-test=http://$HOST:$etcd_peer" --log-level warn
  wait_for "etcd on $HOST:$etcd_port" curl -fsS "http://$HOST:$etcd_port/health"

  local p=$RUN_DIR/pki audit=()
  if [ "${KUBE_AUDIT:-0}" = 1 ]; then
    printf 'apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n' \
      >"$RUN_DIR/audit-policy.yaml"
    audit=(--audit-policy-file "$RUN_DIR/audit-policy.yaml" --audit-log-path "$RUN_DIR/audit.log"
      --audit-log-format json --audit-log-maxsize 0)
  fi
  # Pod logs (`kubectl logs`, pods/log) are read from th-test-node's kubelet endpoint: at its
  # Node's InternalIP (127.0.0.1), not its Hostname address (the node's name, which no DNS
  # resolves; the default order tries Hostname first), as kubeadm does. No
  # --kubelet-certificate-authority: the apiserver then does not verify the agent's self-signed
  # certificate.
  launch APISERVER "$RUN_DIR/apiserver.log" "$BIN/kube-apiserver" \
    --etcd-servers "http://$HOST:$etcd_port" \
    --bind-address "$HOST" --advertise-address "$HOST" --secure-port "$APISERVER_PORT" \
    --tls-cert-file "$p/apiserver.crt" --tls-private-key-file "$p/apiserver.key" \
    --client-ca-file "$p/ca.crt" \
    --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$p/sa.pub" --service-account-signing-key-file "$p/sa.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --authorization-mode RBAC --allow-privileged=true \
    --kubelet-preferred-address-types InternalIP,Hostname \
    --endpoint-reconciler-type none --v 1 "${audit[@]}"
  wait_for "ready kube-apiserver on https://$HOST:$APISERVER_PORT" \
    curl -fsS --cacert "$p/ca.crt" --cert "$p/admin.crt" --key "$p/admin.key" \
    "https://$HOST:$APISERVER_PORT/readyz"

  launch KCM "$RUN_DIR/kcm.log" "$BIN/kube-controller-manager" \
    --kubeconfig "$RUN_DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$RUN_DIR/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$RUN_DIR/controller-manager.kubeconfig" \
    --bind-address "$HOST" --secure-port 0 --leader-elect=false \
    --controllers job,garbagecollector,namespace,ttl-after-finished,serviceaccount,serviceaccount-token,root-ca-cert-publisher,clusterrole-aggregation \
    --use-service-account-credentials=true \
    --service-account-private-key-file "$p/sa.key" --root-ca-file "$p/ca.crt" \
    --concurrent-gc-syncs 5 --v 1
  # the service-account controller (using its own credentials, through RBAC) made the default
  # namespace's ServiceAccount: the controllers run and are authorized
  wait_for "the controllers' default ServiceAccount" kctl -n default get serviceaccount default
  log "kubernetes v$KUBE_VERSION control plane ready on https://$HOST:$APISERVER_PORT ($((SECONDS - t0)) s; logs in $RUN_DIR)"
  env_line
}

cmd_stop() {
  if ! read_state; then
    log "no state file at $STATE; nothing to stop"
    return 0
  fi
  log "stopping the control plane (apiserver on port $APISERVER_PORT)"
  local shm
  shm=$(readlink "$RUN_DIR/etcd" 2>/dev/null || true)
  stop_recorded
  case $shm in /dev/shm/th-etcd.*) rm -rf "$shm" ;; esac
}

cmd_env() {
  running || die "no running control plane recorded in $STATE (run: $0 start)"
  env_line
}

case ${1:-} in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  env) cmd_env ;;
  kubectl) cmd_install; printf '%s\n' "$BIN/kubectl" ;;
  status)
    if running; then log "running: apiserver on https://$HOST:$APISERVER_PORT"; else log "not running"; exit 1; fi ;;
  *)
    echo "usage: $0 {install|start|stop|env|kubectl|status}" >&2
    exit 64 ;;
esac
