#!/usr/bin/env bash
# The service spread over several hosts on this machine, without Docker:
#
#   scripts/cluster.sh up [--reduced]   Redis Cluster, Kafka brokers, API hosts, relay,
#                                       projector and HAProxy; idempotent
#   scripts/cluster.sh down             stop everything, remove the namespaces and the data
#   scripts/cluster.sh status           one line per part (exit 3 if any is down)
#   scripts/cluster.sh env              the settings a client on this machine uses
#   scripts/cluster.sh redis-kill PORT | redis-start PORT | redis-role PORT  (the drills)
#   scripts/cluster.sh broker-kill N   | broker-start N
#   scripts/cluster.sh link-down N     | link-up N     | host-kill N | host-start N
#
# The topology (docs/scaling.md draws it):
#
#   Redis Cluster  3 masters + 3 replicas   $BRIDGE_IP:7000-7005  (cluster-node-timeout 2 s)
#   Kafka          3 KRaft brokers, each also a controller, RF 3, min.insync.replicas 2
#                                           $BRIDGE_IP:19092-19094 (controllers :19192-19194)
#   MariaDB        the one scripts/services.sh runs (127.0.0.1:3306), database
#                  $CLUSTER_DATABASE; the hosts reach it through HAProxy on $BRIDGE_IP:7099
#   API hosts      one network namespace each (fo-api1..3), 10.77.0.11-13:8000, joined by
#                  the bridge fo-br0 (10.77.0.1/25) through veth pairs
#   relay, projector   on this host
#   HAProxy        127.0.0.1:$CLUSTER_LB_PORT -> the API hosts, health-checked
#
# --reduced (the CI job): 3 masters + 3 replicas, one broker, two API hosts.
# The namespaces only know their half of 10.77.0.0/24 (no default route): their traffic
# stays here.
# Everything lives under $CLUSTER_DIR (default <repo>/.cluster); the Kafka jars are the ones
# scripts/services.sh fetches into .services/kafka/libs.
set -euo pipefail

REPO_ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
# The helpers (logging, pid files, waits, apt installs, the Kafka jars) are services.sh's.
# shellcheck source=scripts/services.sh
source "$REPO_ROOT/scripts/services.sh"
log() { printf '[cluster %3ds] %s\n' "$SECONDS" "$*" >&2; }
die() { printf '[cluster] ERROR: %s\n' "$*" >&2; exit 1; }

CLUSTER_DIR=${CLUSTER_DIR:-$REPO_ROOT/.cluster}
case $CLUSTER_DIR in /*) ;; *) CLUSTER_DIR=$PWD/$CLUSTER_DIR ;; esac
CLUSTER_LB_PORT=${CLUSTER_LB_PORT:-8000}
CLUSTER_DATABASE=${CLUSTER_DATABASE:-flashorder_cluster}
CLUSTER_API_WORKERS=${CLUSTER_API_WORKERS:-1}
CLUSTER_REDIS_BASE=${CLUSTER_REDIS_BASE:-7000}
CLUSTER_KAFKA_BASE=${CLUSTER_KAFKA_BASE:-19092}
CLUSTER_ENV_EXTRA=${CLUSTER_ENV_EXTRA:-}
# Two topologies can coexist: each takes one half of 10.77.0.0/24 (CLUSTER_NET_BASE 0 or
# 128) and names of its own (CLUSTER_NAME), so the CI job's never meets `make cluster`'s.
NAME=${CLUSTER_NAME:-fo}
NET_BASE=${CLUSTER_NET_BASE:-0}
BRIDGE=$NAME-br0
BRIDGE_IP=10.77.0.$((NET_BASE + 1))
DB_PROXY_PORT=7099
REDIS_NODES=6
BIN=$REPO_ROOT/.venv/bin

# What `up` built is remembered, so that `down`, `status` and the faults know the shape.
shape_file() { echo "$CLUSTER_DIR/shape"; }
load_shape() {
  API_HOSTS=3 BROKERS=3
  if [[ -s $(shape_file) ]]; then
    # shellcheck disable=SC1090 # written by save_shape below
    source "$(shape_file)"
  fi
}
save_shape() {
  mkdir -p "$CLUSTER_DIR"
  printf 'API_HOSTS=%s BROKERS=%s\n' "$API_HOSTS" "$BROKERS" >"$(shape_file)"
}

host_ip() { echo "10.77.0.$((NET_BASE + 10 + $1))"; }
redis_port() { echo $((CLUSTER_REDIS_BASE + $1)); }
broker_port() { echo $((CLUSTER_KAFKA_BASE + $1 - 1)); }
controller_port() { echo $((CLUSTER_KAFKA_BASE + 100 + $1 - 1)); }

redis_url() {
  local i nodes=()
  for ((i = 0; i < 3; i++)); do nodes+=("$BRIDGE_IP:$(redis_port "$i")"); done
  (IFS=,; echo "redis+cluster://${nodes[*]}")
}
kafka_bootstrap() {
  local n nodes=()
  for ((n = 1; n <= BROKERS; n++)); do nodes+=("$BRIDGE_IP:$(broker_port "$n")"); done
  (IFS=,; echo "${nodes[*]}")
}

# service_env DB_HOST DB_PORT: the settings every process of the topology runs with.
service_env() {
  cat <<EOF
FLASHORDER_DATABASE_URL=mysql+asyncmy://flashorder:flashorder@$1:$2/$CLUSTER_DATABASE
FLASHORDER_REDIS_URL=$(redis_url)
FLASHORDER_KAFKA_BOOTSTRAP=$(kafka_bootstrap)
FLASHORDER_KAFKA_REPLICATION=$((BROKERS < 3 ? BROKERS : 3))
FLASHORDER_KAFKA_TOPIC_PREFIX=${CLUSTER_TOPIC_PREFIX:-cluster.}
FLASHORDER_PROJECTOR_GROUP=cluster-projector
FLASHORDER_LOG_LEVEL=warning
EOF
  # A topology of this machine, on a private bridge, whose tests and examples mint tokens and
  # sign payment webhooks with the documented development secrets: allowed here unless the
  # operator brings secrets of their own (FLASHORDER_JWT_SECRET or _FILE, and
  # FLASHORDER_PAYMENT_WEBHOOK_SECRET or _FILE, in the environment reach every process).
  if [[ -z ${FLASHORDER_JWT_SECRET:-} && -z ${FLASHORDER_JWT_SECRET_FILE:-} ]] ||
    [[ -z ${FLASHORDER_PAYMENT_WEBHOOK_SECRET:-} && -z ${FLASHORDER_PAYMENT_WEBHOOK_SECRET_FILE:-} ]]; then
    echo "FLASHORDER_ALLOW_DEV_SECRET=1"
  fi
  local kv
  for kv in $CLUSTER_ENV_EXTRA; do echo "$kv"; done
}

ensure_cluster_tools() {
  local pkgs=()
  command -v haproxy >/dev/null || pkgs+=(haproxy)
  command -v ip >/dev/null || pkgs+=(iproute2)
  command -v curl >/dev/null || pkgs+=(curl)
  mkdir -p "$SERVICES_DIR"
  apt_install "${pkgs[@]+"${pkgs[@]}"}"
  # Debian's haproxy package starts its own daemon (on no port of ours); it is not needed.
  if [[ ${#pkgs[@]} -gt 0 && -d /run/systemd/system ]]; then
    systemctl disable --now haproxy >/dev/null 2>&1 || true
  fi
  ensure_tools redis kafka
  [[ -x $BIN/flashorder ]] || die "no $BIN/flashorder: run 'make install' first"
}

# --------------------------------------------------------------------------
# the network: a bridge on this host, one namespace per API host
# --------------------------------------------------------------------------
net_up() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    ip addr add "$BRIDGE_IP/25" dev "$BRIDGE"
  fi
  ip link set "$BRIDGE" up
  local n
  for ((n = 1; n <= API_HOSTS; n++)); do
    if ! ip netns list | grep -qw "$NAME-api$n"; then
      ip netns add "$NAME-api$n"
    fi
    if ! ip link show "$NAME-v$n" >/dev/null 2>&1; then
      ip link add "$NAME-v$n" type veth peer name eth0 netns "$NAME-api$n"
      ip -n "$NAME-api$n" addr add "$(host_ip "$n")/25" dev eth0
    fi
    ip link set "$NAME-v$n" master "$BRIDGE" up
    ip -n "$NAME-api$n" link set lo up
    ip -n "$NAME-api$n" link set eth0 up
  done
}

# host_kill N: every process of the host's namespace, at once (a machine lost).
host_kill() {
  local pids
  pids=$(ip netns pids "$NAME-api$1" 2>/dev/null || true)
  if [[ -n $pids ]]; then
    # shellcheck disable=SC2086 # a list of pids
    kill -KILL $pids 2>/dev/null || true
  fi
  rm -f "$(proc_pidfile "api$1")"
}

net_down() {
  local ns
  for ns in $(ip netns list | awk '{print $1}' | grep -E "^$NAME-api[0-9]+\$" || true); do
    host_kill "${ns#"$NAME"-api}"
    ip netns del "$ns"
  done
  if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link del "$BRIDGE"; fi
}

# --------------------------------------------------------------------------
# Redis Cluster
# --------------------------------------------------------------------------
rnode_dir() { echo "$CLUSTER_DIR/redis/$1"; }
rcli() { redis-cli -h "$BRIDGE_IP" -p "$1" "${@:2}"; }

redis_node_pid() {
  local pid
  pid=$(read_pidfile "$(rnode_dir "$1")/redis.pid")
  if [[ -n $pid ]] && pid_matches "$pid" redis-server ":$1"; then echo "$pid"; fi
}

redis_node_start() {
  local port=$1 dir
  dir=$(rnode_dir "$port")
  [[ -n $(redis_node_pid "$port") ]] && return 0
  mkdir -p "$dir"
  cat >"$dir/redis.conf" <<EOF
# Generated by scripts/cluster.sh.
bind $BRIDGE_IP
port $port
protected-mode no
daemonize yes
pidfile $dir/redis.pid
logfile $dir/redis.log
dir $dir
cluster-enabled yes
cluster-config-file nodes.conf
# A master silent for 2 s is failed over to its replica.
cluster-node-timeout 2000
cluster-announce-ip $BRIDGE_IP
# The gate is rebuilt from the database (reconciliation): no snapshots, no AOF.
save ""
appendonly no
EOF
  redis-server "$dir/redis.conf" >>"$dir/redis.out" 2>&1 </dev/null 9>&- || die "redis $port failed to start"
  wait_ready "redis-$port" 20 "" rcli "$port" ping || die "redis $port does not answer"
}

cluster_ok() { rcli "$1" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; }

redis_cluster_up() {
  local i ports=() nodes=()
  for ((i = 0; i < REDIS_NODES; i++)); do
    ports+=("$(redis_port "$i")")
    nodes+=("$BRIDGE_IP:$(redis_port "$i")")
  done
  for i in "${ports[@]}"; do redis_node_start "$i"; done
  if [[ $(rcli "${ports[0]}" cluster info | tr -d '\r' | sed -n 's/^cluster_known_nodes://p') != "$REDIS_NODES" ]]; then
    log "redis: creating the cluster (3 masters, 3 replicas)"
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$CLUSTER_DIR/redis/create.log" 2>&1 ||
      { tail -20 "$CLUSTER_DIR/redis/create.log" >&2; die "redis-cli --cluster create failed"; }
  fi
  for i in "${ports[@]}"; do
    wait_ready "redis-$i" 30 "" cluster_ok "$i" || die "redis cluster not ok on $i"
  done
  # Every replica attached and synced, so that a failover has someone to promote.
  wait_ready redis-replicas 30 "" replicas_synced "${ports[0]}" || die "redis replicas not in sync"
  log "redis: cluster ok on $BRIDGE_IP:${ports[0]}-${ports[-1]}"
}

replicas_synced() {
  local synced
  synced=$(rcli "$1" cluster nodes | awk '$3 ~ /slave/ && $8 == "connected"' | wc -l)
  ((synced == REDIS_NODES / 2))
}

redis_cluster_down() {
  local i port pid
  for ((i = 0; i < REDIS_NODES; i++)); do
    port=$(redis_port "$i")
    pid=$(redis_node_pid "$port")
    [[ -n $pid ]] || continue
    rcli "$port" shutdown nosave >/dev/null 2>&1 || true
    wait_gone "$pid" 10 || terminate "$pid" "redis-$port" 5
  done
  rm -rf "$CLUSTER_DIR/redis"
}

# --------------------------------------------------------------------------
# Kafka: KRaft brokers that are also the controllers
# --------------------------------------------------------------------------
broker_dir() { echo "$CLUSTER_DIR/kafka/$1"; }

broker_pid() {
  local pid dir
  dir=$(broker_dir "$1")
  pid=$(read_pidfile "$dir/kafka.pid")
  if [[ -n $pid ]] && pid_matches "$pid" kafka.Kafka "$dir/server.properties"; then echo "$pid"; fi
}

broker_config() {
  local n=$1 dir voters="" m
  dir=$(broker_dir "$n")
  for ((m = 1; m <= BROKERS; m++)); do voters+="${voters:+,}$m@$BRIDGE_IP:$(controller_port "$m")"; done
  mkdir -p "$dir/data" "$dir/logs"
  cat >"$dir/server.properties" <<EOF
# Generated by scripts/cluster.sh.
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$voters
listeners=PLAINTEXT://$BRIDGE_IP:$(broker_port "$n"),CONTROLLER://$BRIDGE_IP:$(controller_port "$n")
advertised.listeners=PLAINTEXT://$BRIDGE_IP:$(broker_port "$n")
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
default.replication.factor=$((BROKERS < 3 ? BROKERS : 3))
min.insync.replicas=$((BROKERS < 3 ? 1 : 2))
offsets.topic.replication.factor=$((BROKERS < 3 ? BROKERS : 3))
transaction.state.log.replication.factor=$((BROKERS < 3 ? BROKERS : 3))
transaction.state.log.min.isr=$((BROKERS < 3 ? 1 : 2))
share.coordinator.state.topic.replication.factor=$((BROKERS < 3 ? BROKERS : 3))
share.coordinator.state.topic.min.isr=$((BROKERS < 3 ? 1 : 2))
# A replica that fell behind never becomes leader: an acknowledged event is never lost.
unclean.leader.election.enable=false
auto.create.topics.enable=false
num.partitions=6
group.initial.rebalance.delay.ms=0
EOF
}

broker_start() {
  local n=$1 dir pid
  dir=$(broker_dir "$n")
  [[ -n $(broker_pid "$n") ]] && return 0
  broker_config "$n"
  if [[ ! -f $dir/data/meta.properties ]]; then
    local id
    id=$(cat "$CLUSTER_DIR/kafka/cluster.id")
    KFK_LOGDIR=$dir/logs kafka_run_class kafka.tools.StorageTool format -t "$id" \
      -c "$dir/server.properties" >>"$dir/format.log" 2>&1 || { tail "$dir/format.log" >&2; die "kafka $n: format failed"; }
  fi
  # shellcheck disable=SC2086 # lists of JVM flags
  (cd "$dir" && start_detached "$dir/kafka.pid" "$dir/kafka.out" \
    java -Xms128m -Xmx384m $KAFKA_JVM_OPTS -Dkafka.logs.dir="$dir/logs" \
    -Dlog4j2.configurationFile="$KFK_LOG4J" -cp "$KFK_LIBS/*" kafka.Kafka "$dir/server.properties")
}

# kafka_start launches the brokers and returns; kafka_wait waits for them (the Redis Cluster
# and the load balancer are set up in between: a JVM's start is the slowest step here).
kafka_start() {
  kafka_ensure_libs
  mkdir -p "$CLUSTER_DIR/kafka"
  if [[ ! -s $CLUSTER_DIR/kafka/cluster.id ]]; then
    # What StorageTool random-uuid prints (a UUID in URL-safe base64), without a JVM.
    python3 -c 'import base64, uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))' \
      >"$CLUSTER_DIR/kafka/cluster.id"
  fi
  local n
  for ((n = 1; n <= BROKERS; n++)); do broker_start "$n" & done
  wait
}

kafka_wait() {
  local n
  for ((n = 1; n <= BROKERS; n++)); do
    wait_ready "kafka-$n" "$KAFKA_READY_TIMEOUT" "$(broker_pid "$n")" broker_metadata "$n" ||
      { show_log_tail "$(broker_dir "$n")/logs/server.log"; die "kafka broker $n not ready"; }
  done
  log "kafka: $BROKERS broker(s) on $(kafka_bootstrap)"
}

# broker_metadata N: broker N answers a Metadata request listing every broker.
broker_metadata() {
  python3 - "$BRIDGE_IP" "$(broker_port "$1")" "$BROKERS" <<'PY'
import socket, struct, sys

host, port, want = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
client = b"flashorder-cluster.sh"
req = struct.pack(">hhih", 3, 4, 7, len(client)) + client + struct.pack(">ib", -1, 0)
with socket.create_connection((host, port), timeout=3) as s:
    s.settimeout(5)
    s.sendall(struct.pack(">i", len(req)) + req)
    size = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))[0]
    resp = s.recv(size, socket.MSG_WAITALL)
_corr, _throttle, brokers = struct.unpack_from(">iii", resp, 0)
sys.exit(0 if brokers >= want else 1)
PY
}

kafka_down() {
  local n pid
  # All at once: stopped one by one, the last brokers wait for a quorum that is gone. The
  # data is deleted next, so a broker that does not stop in time is simply killed.
  for dir in "$CLUSTER_DIR"/kafka/*/; do
    [[ -d $dir ]] || continue
    n=$(basename "$dir")
    pid=$(broker_pid "$n")
    if [[ -n $pid ]]; then terminate "$pid" "kafka-$n" 10 & fi
  done
  wait
  rm -rf "$CLUSTER_DIR/kafka"
}

# --------------------------------------------------------------------------
# the service: migrations, API hosts, relay, projector
# --------------------------------------------------------------------------
proc_pidfile() { echo "$CLUSTER_DIR/run/$1.pid"; }
proc_pid() {
  local pid
  pid=$(read_pidfile "$(proc_pidfile "$1")")
  if [[ -n $pid ]] && pid_matches "$pid" flashorder "$2"; then echo "$pid"; fi
}

# start_proc NAME NETNS|- SUBCOMMAND...: a flashorder process, in a namespace or here.
start_proc() {
  local name=$1 ns=$2
  shift 2
  [[ -n $(proc_pid "$name" "$1") ]] && return 0
  mkdir -p "$CLUSTER_DIR/run" "$CLUSTER_DIR/logs"
  local envs=()
  if [[ $ns == - ]]; then
    mapfile -t envs < <(service_env 127.0.0.1 "$MARIADB_PORT")
    start_detached "$(proc_pidfile "$name")" "$CLUSTER_DIR/logs/$name.log" \
      env "${envs[@]}" FLASHORDER_DATA_DIR="$CLUSTER_DIR/run" "$BIN/flashorder" "$@"
  else
    mapfile -t envs < <(service_env "$BRIDGE_IP" "$DB_PROXY_PORT")
    start_detached "$(proc_pidfile "$name")" "$CLUSTER_DIR/logs/$name.log" \
      ip netns exec "$ns" env "${envs[@]}" FLASHORDER_DATA_DIR="$CLUSTER_DIR/run" \
      FLASHORDER_HOST="$(host_ip "${ns#"$NAME"-api}")" FLASHORDER_PORT=8000 \
      FLASHORDER_WORKERS="$CLUSTER_API_WORKERS" "$BIN/flashorder" "$@"
  fi
}

stop_proc() {
  local pid
  pid=$(proc_pid "$1" "$2")
  [[ -n $pid ]] && terminate "$pid" "$1" 15
  rm -f "$(proc_pidfile "$1")"
}

host_start() { start_proc "api$1" "$NAME-api$1" serve; }
host_ready() { curl -fsS -m 2 "http://$(host_ip "$1"):8000/healthz" >/dev/null; }

# app_start: the schema, then the API hosts; app_wait: the relay and the projector (once
# the brokers answer), and every host healthy.
app_start() {
  local envs=() n
  mapfile -t envs < <(service_env 127.0.0.1 "$MARIADB_PORT")
  "$BIN/python" -c "import sys
from flashorder.adapters.sql.migrate import create_database_if_missing
create_database_if_missing(sys.argv[1], sys.argv[2])" \
    "mysql+asyncmy://flashorder:flashorder@127.0.0.1:$MARIADB_PORT" "$CLUSTER_DATABASE" 2>/dev/null
  # Once, before the processes that would otherwise race to migrate.
  env "${envs[@]}" "$BIN/flashorder" migrate >/dev/null
  for ((n = 1; n <= API_HOSTS; n++)); do host_start "$n"; done
}

app_wait() {
  local n
  start_proc relay - relay
  start_proc projector - projector
  for ((n = 1; n <= API_HOSTS; n++)); do
    wait_ready "api$n" 90 "$(proc_pid "api$n" serve)" host_ready "$n" ||
      { show_log_tail "$CLUSTER_DIR/logs/api$n.log"; die "API host $n not ready"; }
  done
  log "api: $API_HOSTS host(s), relay and projector running"
}

app_down() {
  local f name
  for f in "$CLUSTER_DIR"/run/*.pid; do
    [[ -e $f ]] || continue
    name=$(basename "$f" .pid)
    case $name in
      api*) stop_proc "$name" serve ;;
      *) stop_proc "$name" "$name" ;;
    esac
  done
}

# --------------------------------------------------------------------------
# HAProxy
# --------------------------------------------------------------------------
LB_DIR() { echo "$CLUSTER_DIR/haproxy"; }
lb_pid() {
  local pid
  pid=$(read_pidfile "$(LB_DIR)/haproxy.pid")
  if [[ -n $pid ]] && pid_matches "$pid" haproxy "$(LB_DIR)/haproxy.cfg"; then echo "$pid"; fi
}

lb_up() {
  local dir n
  dir=$(LB_DIR)
  [[ -n $(lb_pid) ]] && return 0
  if port_open "$CLUSTER_LB_PORT"; then
    die "port $CLUSTER_LB_PORT is taken ($(port_owner "$CLUSTER_LB_PORT")); set CLUSTER_LB_PORT"
  fi
  mkdir -p "$dir"
  {
    cat <<EOF
# Generated by scripts/cluster.sh.
global
  # Two descriptors a connection, within the default limit of 20,000.
  maxconn 8000
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  # A request that could not reach a host goes to another one; nothing is retried once
  # it reached a host (an order may have been taken there: the buyer retries with its key).
  retries 2
  option redispatch
  retry-on conn-failure
frontend api
  bind 127.0.0.1:$CLUSTER_LB_PORT
  default_backend hosts
backend hosts
  balance roundrobin
  # Which host answered: the race checks that the buyers were spread over all of them.
  http-response set-header X-Served-By %s
  option httpchk GET /healthz
  # Down after three failed checks 500 ms apart (a cut link: 1.5 s); back after two good
  # ones. A check waits up to 3 s: a host busy with a burst is slow, not gone.
  timeout check 3s
  default-server check inter 500ms fall 3 rise 2
EOF
    for ((n = 1; n <= API_HOSTS; n++)); do
      echo "  server api$n $(host_ip "$n"):8000"
    done
    cat <<EOF
listen mariadb
  mode tcp
  bind $BRIDGE_IP:$DB_PROXY_PORT
  timeout client 1h
  timeout server 1h
  server db 127.0.0.1:$MARIADB_PORT
EOF
  } >"$dir/haproxy.cfg"
  haproxy -c -q -f "$dir/haproxy.cfg" || die "haproxy: invalid configuration"
  start_detached "$dir/haproxy.pid" "$dir/haproxy.out" haproxy -db -f "$dir/haproxy.cfg"
  wait_ready haproxy 10 "$(lb_pid)" port_open "$CLUSTER_LB_PORT" || die "haproxy not listening"
}

lb_down() {
  local pid
  pid=$(lb_pid)
  [[ -n $pid ]] && terminate "$pid" haproxy 10
  rm -rf "$(LB_DIR)"
}

lb_ready() { curl -fsS -m 2 "http://127.0.0.1:$CLUSTER_LB_PORT/healthz" >/dev/null; }

# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------
cluster_lock() {
  mkdir -p "$CLUSTER_DIR"
  # fd 9, which start_detached and the daemons' starts close: no daemon inherits the lock.
  exec 9>"$CLUSTER_DIR/.lock"
  flock -w 300 9 || die "another scripts/cluster.sh holds $CLUSTER_DIR/.lock"
}

up() {
  local t0
  t0=$(now)
  [[ $(id -u) -eq 0 ]] || die "network namespaces need root"
  API_HOSTS=3 BROKERS=3
  if [[ ${1:-} == --reduced ]]; then API_HOSTS=2 BROKERS=1; fi
  save_shape
  ensure_cluster_tools
  # MariaDB stays the one of scripts/services.sh, shared with other work: started if none.
  port_open "$MARIADB_PORT" || "$REPO_ROOT/scripts/services.sh" up mariadb
  net_up
  # The brokers' JVMs start while the Redis Cluster forms; every process of the service
  # starts once they answer: `flashorder migrate` and `serve` create the topics, and fail at
  # once on a broker that does not listen yet (found on a fresh machine, whose first JVM
  # start is the slowest).
  kafka_start
  redis_cluster_up
  lb_up
  kafka_wait
  app_start
  app_wait
  wait_ready lb 30 "" lb_ready || die "the load balancer finds no healthy API host"
  log "up in $(since "$t0")s: http://127.0.0.1:$CLUSTER_LB_PORT ($API_HOSTS API hosts, $BROKERS broker(s))"
}

down() {
  app_down
  lb_down
  kafka_down
  redis_cluster_down
  net_down
  # The topology's own database goes too: the next `up` starts from an empty shop.
  if port_open "$MARIADB_PORT" && [[ -x $BIN/python ]]; then
    "$BIN/python" -c "import sys
from flashorder.adapters.sql.migrate import drop_database
drop_database(sys.argv[1], sys.argv[2])" \
      "mysql+asyncmy://flashorder:flashorder@127.0.0.1:$MARIADB_PORT" "$CLUSTER_DATABASE" 2>/dev/null || true
  fi
  rm -rf "$CLUSTER_DIR/run" "$(shape_file)"
  log "down"
}

status() {
  local rc=0 n pid
  # say NAME PID [DETAIL]: one status line; a missing pid is a part that is down.
  say() {
    if [[ -n $2 ]]; then echo "$1: running (pid $2${3:+, $3})"; else echo "$1: stopped"; rc=3; fi
  }
  for ((n = 0; n < REDIS_NODES; n++)); do
    pid=$(redis_node_pid "$(redis_port "$n")")
    say "redis $BRIDGE_IP:$(redis_port "$n")" "$pid" "$(rcli "$(redis_port "$n")" role 2>/dev/null | head -1)"
  done
  for ((n = 1; n <= BROKERS; n++)); do
    say "kafka $n $BRIDGE_IP:$(broker_port "$n")" "$(broker_pid "$n")"
  done
  for ((n = 1; n <= API_HOSTS; n++)); do
    say "api$n $(host_ip "$n"):8000" "$(proc_pid "api$n" serve)"
  done
  for n in relay projector; do
    say "$n" "$(proc_pid "$n" "$n")"
  done
  say "haproxy 127.0.0.1:$CLUSTER_LB_PORT" "$(lb_pid)"
  return $rc
}

cluster_main() {
  (($# >= 1)) || { sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
  local cmd=$1
  shift
  load_shape
  case $cmd in
    up) cluster_lock; up "$@" ;;
    down) cluster_lock; down ;;
    status) status ;;
    env) service_env "$BRIDGE_IP" "$DB_PROXY_PORT"; echo "CLUSTER_LB_URL=http://127.0.0.1:$CLUSTER_LB_PORT" ;;
    redis-kill) kill -KILL "$(redis_node_pid "$1")" ;;
    redis-start) redis_node_start "$1" ;;
    redis-role) rcli "$1" role | head -1 ;;
    broker-kill) kill -KILL "$(broker_pid "$1")" ;;
    broker-start)
      broker_start "$1"
      wait_ready "kafka-$1" "$KAFKA_READY_TIMEOUT" "$(broker_pid "$1")" broker_metadata "$1"
      ;;
    link-down) ip link set "$NAME-v$1" down ;;
    link-up) ip link set "$NAME-v$1" up ;;
    host-kill) host_kill "$1" ;;
    host-start)
      host_start "$1"
      wait_ready "api$1" 90 "$(proc_pid "api$1" serve)" host_ready "$1"
      ;;
    *) die "unknown command '$cmd'" ;;
  esac
}

cluster_main "$@"
