#!/usr/bin/env bash
# spark-cluster.sh: a throw-away Spark cluster (a standalone master, one worker and a Spark
# Connect server) for the Spark tests of `scripts/test.sh`, bound to 127.0.0.1 only.
#
#   scripts/spark-cluster.sh install   create the virtualenv with pyspark (its jars hold Spark and
#                                      the Spark Connect server; once; also done by `start`)
#   scripts/spark-cluster.sh start     start the master, the worker and the Connect server, wait
#                                      until the worker has joined and Connect answers, print
#                                      `TH_TEST_SPARK_CONNECT=sc://127.0.0.1:PORT` on stdout
#   scripts/spark-cluster.sh env       print that line for the running cluster
#   scripts/spark-cluster.sh status    exit 0 if the recorded processes are running
#   scripts/spark-cluster.sh stop      stop exactly the three recorded process groups
#
# Spark needs Java 17: the `java` on PATH (or $JAVA_HOME), else Debian's openjdk-17-jre-headless,
# installed with apt-get when running as root. Each process runs in its own session (setsid), so
# its PID is its process-group id and `stop` ends it with its children (the executor the worker
# launches is a child of the worker) and nothing else.
#
# Memory is kept modest (the machine also runs the Dask, Ray and S3 servers of the tests): the
# master's and the worker's heaps 256 MiB each, the Connect server's driver 768 MiB, one executor
# of 2 cores and 512 MiB (about 1.8 GB resident in all).
#
# Environment:
#   TH_CACHE            cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/truthound); the
#                       virtualenv is $TH_CACHE/venv-spark
#   SPARK_RUN_DIR       where the state file, logs, configuration and work directory live
#                       (default $TH_CACHE/run/spark); a fresh directory per caller runs clusters
#                       side by side
#   SPARK_CONNECT_PORT  Spark Connect port (default: a free port picked at start); the master's
#                       and the web UIs' ports are always picked free
#   SPARK_WAIT_S        readiness bound in seconds (default 180)
#   SPARK_CORES         executor cores, i.e. tasks at once (default 2)
#   SPARK_PKG           pip requirement (default "pyspark==4.3.0")
#
# Only stdout carries the TH_TEST_SPARK_CONNECT line; progress and errors go to stderr.
set -euo pipefail

CACHE=${TH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/truthound}
VENV=$CACHE/venv-spark
RUN_DIR=${SPARK_RUN_DIR:-$CACHE/run/spark}
STATE=$RUN_DIR/state
HOST=127.0.0.1
WAIT_S=${SPARK_WAIT_S:-180}
CORES=${SPARK_CORES:-2}
SPARK_PKG=${SPARK_PKG:-"pyspark==4.3.0"}
SPARK_VERSION=${SPARK_PKG##*==}
MARKER=$VENV/.installed

SERVICE=spark-cluster
. "$(dirname "${BASH_SOURCE[0]}")/lib/service.sh"

spark_home() {
  "$VENV/bin/python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))'
}

venv_ok() {
  [ -f "$MARKER" ] && [ "$(cat "$MARKER")" = "$SPARK_PKG" ] &&
    "$VENV/bin/python" -c "import pyspark; assert pyspark.__version__ == '$SPARK_VERSION', pyspark.__version__" \
      >/dev/null 2>&1 &&
    compgen -G "$(spark_home)/jars/spark-connect_*.jar" >/dev/null
}

ensure_java() {
  if [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/java" ]; then return 0; fi
  if ! command -v java >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      log "java is missing: installing Debian's openjdk-17-jre-headless"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q openjdk-17-jre-headless >&2 ||
        { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q openjdk-17-jre-headless >&2; } ||
        die "apt-get install openjdk-17-jre-headless failed"
    else
      die "Spark needs Java 17 and there is no java on PATH (install openjdk-17-jre-headless, or set JAVA_HOME)"
    fi
  fi
  JAVA_HOME=$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")
  export JAVA_HOME
}

cmd_install() {
  ensure_java
  venv_install spark "$SPARK_PKG"
}

read_state() {  # sets PORT UI_PORT MPID MSTART WPID WSTART CPID CSTART
  [ -f "$STATE" ] || return 1
  PORT=$(sed -n 's/^PORT=//p' "$STATE")
  UI_PORT=$(sed -n 's/^UI_PORT=//p' "$STATE")
  MPID=$(sed -n 's/^MASTER_PID=//p' "$STATE")
  MSTART=$(sed -n 's/^MASTER_START=//p' "$STATE")
  WPID=$(sed -n 's/^WORKER_PID=//p' "$STATE")
  WSTART=$(sed -n 's/^WORKER_START=//p' "$STATE")
  CPID=$(sed -n 's/^CONNECT_PID=//p' "$STATE")
  CSTART=$(sed -n 's/^CONNECT_START=//p' "$STATE")
  [ -n "$PORT" ] && [ -n "$MPID" ]
}

running() {
  read_state || return 1
  alive "$MPID" "$MSTART" && alive "$WPID" "$WSTART" && alive "$CPID" "$CSTART"
}

env_line() { printf 'TH_TEST_SPARK_CONNECT=sc://%s:%s\n' "$HOST" "$1"; }

stop_recorded() {
  read_state || return 0
  if alive "${CPID:-}" "${CSTART:-}"; then kill_group "$CPID" || log "connect group $CPID did not exit"; fi
  if alive "${WPID:-}" "${WSTART:-}"; then kill_group "$WPID" || log "worker group $WPID did not exit"; fi
  if alive "${MPID:-}" "${MSTART:-}"; then kill_group "$MPID" || log "master group $MPID did not exit"; fi
  rm -f "$STATE"
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# started NAME PID: record it in the state file
record() { printf '%s_PID=%s\n%s_START=%s\n' "$1" "$2" "$1" "$(proc_field "$2" 20 || true)" >>"$STATE"; }

exited() { ! kill -0 "$1" 2>/dev/null || [ "$(proc_field "$1" 1)" = Z ]; }

fail_start() {
  log "$1; last log lines:"
  tail -n 20 "$RUN_DIR"/*.log >&2 || true
  stop_recorded
  exit 1
}

cmd_start() {
  if running; then
    log "already running (master pid $MPID, worker pid $WPID, connect pid $CPID, port $PORT)"
    env_line "$PORT"
    return 0
  fi
  stop_recorded  # part of a cluster: stop what is left of it
  cmd_install
  local home port master_port ui_port worker_ui_port t0 mpid wpid cpid
  home=$(spark_home)
  mkdir -p "$RUN_DIR/conf" "$RUN_DIR/work" "$RUN_DIR/tmp"
  port=${SPARK_CONNECT_PORT:-$(free_port)}
  port_open "$port" && die "port $port on $HOST is already in use"
  master_port=$(free_port)
  ui_port=$(free_port)
  worker_ui_port=$(free_port)
  cat >"$RUN_DIR/conf/spark-defaults.conf" <<EOF
spark.driver.host              $HOST
spark.driver.bindAddress       $HOST
spark.local.dir                $RUN_DIR/tmp
spark.ui.showConsoleProgress   false
spark.master.rest.enabled      false
EOF
  export SPARK_HOME=$home SPARK_CONF_DIR=$RUN_DIR/conf SPARK_LOCAL_IP=$HOST \
    SPARK_LOG_DIR=$RUN_DIR SPARK_WORKER_DIR=$RUN_DIR/work SPARK_NO_DAEMONIZE=1 \
    PYSPARK_PYTHON=$VENV/bin/python
  t0=$SECONDS
  printf 'PORT=%s\nUI_PORT=%s\n' "$port" "$ui_port" >"$STATE"
  # The daemons' heap (spark-submit would take it for the Connect server's driver too: set
  # for these two only).
  local daemon=(env "SPARK_DAEMON_MEMORY=${SPARK_DAEMON_MEMORY:-256m}")
  setsid "${daemon[@]}" "$home/bin/spark-class" org.apache.spark.deploy.master.Master --host "$HOST" \
    --port "$master_port" --webui-port "$ui_port" >"$RUN_DIR/master.log" 2>&1 </dev/null &
  mpid=$!
  record MASTER "$mpid"
  setsid "${daemon[@]}" "$home/bin/spark-class" org.apache.spark.deploy.worker.Worker "spark://$HOST:$master_port" \
    --host "$HOST" --cores "$CORES" --memory 1g --webui-port "$worker_ui_port" \
    --work-dir "$RUN_DIR/work" >"$RUN_DIR/worker.log" 2>&1 </dev/null &
  wpid=$!
  record WORKER "$wpid"
  # The Connect server starts once the worker has joined, so that its executor is placed at once.
  until curl -sf "http://$HOST:$ui_port/json/" 2>/dev/null | grep -q '"aliveworkers" : [1-9]'; do
    exited "$mpid" && fail_start "the master exited during start"
    exited "$wpid" && fail_start "the worker exited during start"
    [ $((SECONDS - t0)) -ge "$WAIT_S" ] && fail_start "no worker joined the master within $WAIT_S s"
    sleep 0.5
  done
  setsid "$home/bin/spark-submit" --class org.apache.spark.sql.connect.service.SparkConnectServer \
    --name "truthound test Spark Connect" --master "spark://$HOST:$master_port" \
    --conf "spark.connect.grpc.binding.address=$HOST" --conf "spark.connect.grpc.binding.port=$port" \
    --conf "spark.cores.max=$CORES" --conf "spark.executor.cores=$CORES" \
    --conf spark.executor.memory=512m --conf spark.driver.memory=768m \
    --conf spark.ui.enabled=false --conf spark.sql.shuffle.partitions=4 \
    >"$RUN_DIR/connect.log" 2>&1 </dev/null &
  cpid=$!
  record CONNECT "$cpid"
  until port_open "$port" && curl -sf "http://$HOST:$ui_port/json/" 2>/dev/null | grep -q '"activeapps" : \[ {'; do
    exited "$cpid" && fail_start "the Spark Connect server exited during start"
    [ $((SECONDS - t0)) -ge "$WAIT_S" ] && fail_start "Spark Connect did not answer on $HOST:$port within $WAIT_S s"
    sleep 0.5
  done
  log "spark $SPARK_VERSION ready: Spark Connect on sc://$HOST:$port, master spark://$HOST:$master_port, $CORES executor cores ($((SECONDS - t0)) s; logs in $RUN_DIR)"
  env_line "$port"
}

cmd_stop() {
  if ! read_state; then
    log "no state file at $STATE; nothing to stop"
    return 0
  fi
  log "stopping the Spark cluster (master group $MPID, worker group ${WPID:-none}, connect group ${CPID:-none}, port $PORT)"
  stop_recorded
}

cmd_env() {
  running || die "no running cluster recorded in $STATE (run: $0 start)"
  env_line "$PORT"
}

case ${1:-} in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  env) cmd_env ;;
  status)
    if running; then log "running: master pid $MPID, worker pid $WPID, connect pid $CPID, port $PORT"; else log "not running"; exit 1; fi ;;
  *)
    echo "usage: $0 {install|start|stop|env|status}" >&2
    exit 64 ;;
esac
