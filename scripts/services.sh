#!/usr/bin/env bash
# Local backing services for flashorder development and CI, without Docker.
#
#   scripts/services.sh up|start     [mariadb|redis|kafka ...]   (default: all three)
#   scripts/services.sh down|stop    [mariadb|redis|kafka ...]
#   scripts/services.sh restart      [mariadb|redis|kafka ...]
#   scripts/services.sh status       [mariadb|redis|kafka ...]   (exit 3 if any is not up)
#
# Everything a service owns (data, config, socket, pid, logs) lives under
# $FLASHORDER_SERVICES_DIR (default <repo>/.services, git-ignored), so a clone
# can be wiped with `scripts/services.sh down && rm -rf .services`. Nothing
# outside that directory is modified, except installing Debian packages when
# they are missing (and stopping the distro's default servers that apt may have
# started, which would otherwise squat on our ports).
#
#   MariaDB 127.0.0.1:$MARIADB_PORT (3306)  db `flashorder`, user flashorder/flashorder (ALL on *.*)
#   Redis   127.0.0.1:$REDIS_PORT   (6379)  no persistence (save "", appendonly no)
#   Kafka   127.0.0.1:$KAFKA_PORT   (9092)  single-node KRaft, controller on $KAFKA_CONTROLLER_PORT (9093)
#
# `up` is idempotent (a running service is reported "already running"), and
# `down NAME` / `up NAME` stop and start one service while keeping its data
# (used by the fault drills). Readiness is polled with a real client request
# (mariadb-admin ping, redis-cli ping, a Kafka Metadata request), never slept on.
set -euo pipefail

REPO_ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
SERVICES_DIR=${FLASHORDER_SERVICES_DIR:-$REPO_ROOT/.services}
# Make it absolute: it ends up in config files read by daemons whose cwd differs.
case $SERVICES_DIR in /*) ;; *) SERVICES_DIR=$PWD/$SERVICES_DIR ;; esac

MARIADB_PORT=${MARIADB_PORT:-3306}
REDIS_PORT=${REDIS_PORT:-6379}
KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
# 2 cores / shared machine: keep the broker JVM small. Overridable.
KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}
# C1-only JIT (TieredStopAtLevel=1): measured ~30-45% faster broker start on a
# loaded 2-core box (9 s vs 12-17 s) and less CPU burnt on C2 compiles that
# compete with the test suite; peak broker throughput is irrelevant for dev/CI.
# Set KAFKA_JVM_OPTS="-XX:+UseG1GC" (or anything) to override.
KAFKA_JVM_OPTS=${KAFKA_JVM_OPTS:--XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:TieredStopAtLevel=1 -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true}
KAFKA_READY_TIMEOUT=${KAFKA_READY_TIMEOUT:-120}
MARIADB_READY_TIMEOUT=${MARIADB_READY_TIMEOUT:-90}
REDIS_READY_TIMEOUT=${REDIS_READY_TIMEOUT:-30}

ALL_SERVICES=(mariadb redis kafka)

# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------
log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

now() { date +%s.%N; }
since() { awk -v s="$1" -v e="$(now)" 'BEGIN { printf "%.1f", e - s }'; }

# pid_alive PID: the process exists (and is not a zombie).
pid_alive() {
  local pid=$1 state
  [[ -n $pid && -d /proc/$pid ]] || return 1
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ $state != Z ]]
}

# pid_matches PID NEEDLE...: the process is alive and its command line contains
# every NEEDLE. Guards against a stale pid file whose pid was recycled by an
# unrelated process - we must never signal someone else's process.
pid_matches() {
  local pid=$1 cmd needle
  shift
  pid_alive "$pid" || return 1
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  for needle in "$@"; do
    [[ $cmd == *"$needle"* ]] || return 1
  done
}

# read_pidfile FILE: print the pid stored in FILE (empty if none).
read_pidfile() { if [[ -s $1 ]]; then tr -dc '0-9' <"$1"; fi; }

# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# ensure_same_port NAME CONFIG REGEX WANTED: a server we already run was
# started from CONFIG; refuse to call it "already running" if that config is
# for another port than the one now asked for (e.g. MARIADB_PORT changed).
ensure_same_port() {
  local name=$1 config=$2 regex=$3 wanted=$4 current
  current=$(sed -nE "s/$regex/\1/p" "$config" 2>/dev/null | head -n1)
  if [[ -n $current && $current != "$wanted" ]]; then
    die "$name: already running from $config on port $current, not $wanted; run 'scripts/services.sh down $name' first"
  fi
}

# port_owner PORT: best-effort description of who listens on PORT (for errors).
port_owner() { ss -Hltnp "sport = :$1" 2>/dev/null | awk '{print $NF}' | head -n1 || true; }

# wait_ready NAME TIMEOUT PID CHECK...: poll CHECK every 0.3 s until it
# succeeds. Fails early if PID dies (no point waiting out the timeout on a
# crashed server) and at TIMEOUT seconds.
wait_ready() {
  local name=$1 timeout=$2 pid=$3
  shift 3
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if [[ -n $pid ]] && ! pid_alive "$pid"; then
      log "$name: process $pid exited during startup"
      return 1
    fi
    if ((SECONDS >= deadline)); then
      log "$name: not ready after ${timeout}s"
      return 1
    fi
    sleep 0.3
  done
}

# wait_gone PID TIMEOUT: wait for PID to exit; non-zero if still alive.
wait_gone() {
  local pid=$1 deadline=$((SECONDS + $2))
  while pid_alive "$pid"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

# terminate PID NAME GRACE: SIGTERM, wait GRACE seconds, then SIGKILL.
terminate() {
  local pid=$1 name=$2 grace=$3
  pid_alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_gone "$pid" "$grace"; then
    log "$name: pid $pid still alive after ${grace}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 10 || die "$name: pid $pid survived SIGKILL"
  fi
}

# show_log_tail FILE...: dump the end of logs so a failed start explains itself.
show_log_tail() {
  local f
  for f in "$@"; do
    [[ -s $f ]] || continue
    log "---- last 40 lines of $f ----"
    tail -n 40 "$f" >&2
  done
}

# start_detached PIDFILE LOGFILE CMD...: run CMD in its own session (so the
# caller's Ctrl-C / exit does not take it down), stdout+stderr appended to
# LOGFILE, its pid written to PIDFILE by the child itself (exec keeps the pid,
# so the pid file names the daemon, not a wrapper). fd 9 (our flock, see
# take_lock) is closed: a daemon inheriting it would hold the lock forever.
start_detached() {
  local pidfile=$1 logfile=$2
  shift 2
  printf '==== %s services.sh starting: %s\n' "$(date -Is)" "$*" >>"$logfile"
  # shellcheck disable=SC2016 # $$/$0/$@ are meant for the inner bash
  setsid nohup bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" >>"$logfile" 2>&1 </dev/null 9>&- &
  # Wait for the child to record its pid (a few ms).
  local tries=50
  while ((tries-- > 0)); do
    [[ -s $pidfile ]] && return 0
    sleep 0.1
  done
  die "could not start: $*"
}

# --------------------------------------------------------------------------
# Debian packages
# --------------------------------------------------------------------------
# apt_install PKG...: install missing Debian packages non-interactively without
# leaving the distro's own services running. A policy-rc.d that exits 101
# tells invoke-rc.d / deb-systemd-invoke "do not start services" (Docker-style
# images already ship one; we add ours only if none exists and remove it again).
apt_install() {
  local pkgs=("$@")
  ((${#pkgs[@]})) || return 0
  [[ $(id -u) -eq 0 ]] || die "missing packages (${pkgs[*]}); run as root or: sudo apt-get install ${pkgs[*]}"
  local t0 our_policy=""
  t0=$(now)
  log "installing Debian packages: ${pkgs[*]}"
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\n# temporary, from flashorder scripts/services.sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    our_policy=1
    # Never leave it behind, even if apt is interrupted.
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT INT TERM
  fi
  export DEBIAN_FRONTEND=noninteractive
  local rc=0
  {
    apt-get -q -o DPkg::Lock::Timeout=300 update &&
      apt-get -q -y -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        install --no-install-recommends "${pkgs[@]}"
  } >"$SERVICES_DIR/apt-install.log" 2>&1 || rc=$?
  if [[ -n $our_policy ]]; then
    rm -f /usr/sbin/policy-rc.d
    trap - EXIT INT TERM
  fi
  if ((rc != 0)); then
    show_log_tail "$SERVICES_DIR/apt-install.log"
    die "apt-get install ${pkgs[*]} failed"
  fi
  stop_distro_services "${pkgs[@]}"
  log "installed ${pkgs[*]} in $(since "$t0")s"
}

# stop_distro_services PKG...: right after installing, make sure the packaged
# default servers (3306 with /var/lib/mysql, 6379 with /var/lib/redis) are not
# running and will not come back at boot - they would take our ports.
stop_distro_services() {
  local pkg unit pidfile pid
  for pkg in "$@"; do
    case $pkg in
      mariadb-server) unit=mariadb pidfile=/run/mysqld/mysqld.pid ;;
      redis-server) unit=redis-server pidfile=/run/redis/redis-server.pid ;;
      *) continue ;;
    esac
    if [[ -d /run/systemd/system ]]; then
      systemctl disable --now "$unit" >/dev/null 2>&1 || true
    fi
    pid=$(read_pidfile "$pidfile")
    if [[ -n $pid ]] && pid_alive "$pid"; then
      log "stopping the distro's default $unit (pid $pid) started by the package postinst"
      service "$unit" stop >/dev/null 2>&1 || terminate "$pid" "$unit" 30
    fi
  done
}

# ensure_tools NAME...: install whatever the given services need.
ensure_tools() {
  local name pkgs=()
  for name in "$@"; do
    case $name in
      mariadb)
        command -v mariadbd >/dev/null || [[ -x /usr/sbin/mariadbd ]] || pkgs+=(mariadb-server)
        command -v mariadb-install-db >/dev/null || pkgs+=(mariadb-server)
        command -v mariadb >/dev/null && command -v mariadb-admin >/dev/null || pkgs+=(mariadb-client)
        ;;
      redis)
        command -v redis-server >/dev/null || pkgs+=(redis-server)
        command -v redis-cli >/dev/null || pkgs+=(redis-tools)
        ;;
      kafka)
        command -v java >/dev/null || pkgs+=(openjdk-17-jre-headless)
        command -v mvn >/dev/null || pkgs+=(maven)
        command -v python3 >/dev/null || pkgs+=(python3-minimal)
        ;;
    esac
  done
  # de-duplicate
  local uniq=()
  mapfile -t uniq < <(printf '%s\n' "${pkgs[@]+"${pkgs[@]}"}" | awk 'NF && !seen[$0]++')
  apt_install "${uniq[@]+"${uniq[@]}"}"
}

# --------------------------------------------------------------------------
# MariaDB
# --------------------------------------------------------------------------
MDB_DIR=$SERVICES_DIR/mariadb
MDB_CNF=$MDB_DIR/my.cnf
MDB_DATA=$MDB_DIR/data
MDB_PID=$MDB_DIR/mariadb.pid
MDB_LOG=$MDB_DIR/mariadb.log
MDB_SOCK=$MDB_DIR/mariadb.sock
# A unix socket path must fit in sun_path (108 bytes). A deeply nested checkout
# would make mariadbd fail with a cryptic error, so fall back to /tmp then.
if ((${#MDB_SOCK} > 100)); then
  MDB_SOCK=/tmp/flashorder-mariadb-$(printf '%s' "$SERVICES_DIR" | sha1sum | cut -c1-12).sock
fi

mariadbd_bin() { command -v mariadbd 2>/dev/null || echo /usr/sbin/mariadbd; }

# mariadbd refuses to run as root unless told to; as root we say so explicitly
# instead of chown'ing the repo to the mysql user (the checkout is root's, and
# mysql could not even traverse it). As another user it simply runs as them.
mariadb_user_opt() { if [[ $(id -u) -eq 0 ]]; then echo --user=root; else echo --user="$(id -un)"; fi; }

mariadb_write_config() {
  mkdir -p "$MDB_DIR" "$MDB_DIR/tmp"
  # Regenerated on each start so port/dir overrides take effect; the data dir
  # is untouched. Passed with --defaults-file, so /etc/mysql is NOT read.
  cat >"$MDB_CNF" <<EOF
# Generated by scripts/services.sh - edits are overwritten on the next start.
[client]
port = $MARIADB_PORT
socket = $MDB_SOCK
default-character-set = utf8mb4

[mysqld]
datadir = $MDB_DATA
socket = $MDB_SOCK
pid-file = $MDB_PID
log-error = $MDB_LOG
tmpdir = $MDB_DIR/tmp
port = $MARIADB_PORT
bind-address = 127.0.0.1
# No DNS lookups per connection; users are created for '%' and 'localhost'.
skip-name-resolve
# No binary log: single dev server, no replication, less fsync per commit.
skip-log-bin
character-set-server = utf8mb4
collation-server = utf8mb4_unicode_ci
innodb_buffer_pool_size = 512M
max_connections = 1000
# Durability defaults (innodb_flush_log_at_trx_commit=1) and the default
# REPEATABLE-READ isolation are kept on purpose: tests exercise real semantics.
EOF
}

mariadb_pid() {
  local pid
  pid=$(read_pidfile "$MDB_PID")
  if [[ -n $pid ]] && pid_matches "$pid" "$MDB_CNF"; then echo "$pid"; fi
}

mariadb_ping() { mariadb-admin --defaults-file="$MDB_CNF" --connect-timeout=2 ping; }

mariadb_initialise() {
  # Initialise into a scratch dir and rename on success, so an interrupted
  # first start never leaves a half-made data dir that later looks valid.
  local t0
  t0=$(now)
  log "mariadb: initialising data dir $MDB_DATA (first start)"
  rm -rf "$MDB_DATA.init"
  if ! mariadb-install-db --defaults-file="$MDB_CNF" "$(mariadb_user_opt)" \
    --datadir="$MDB_DATA.init" --skip-test-db --auth-root-authentication-method=socket \
    >"$MDB_DIR/install-db.log" 2>&1; then
    show_log_tail "$MDB_DIR/install-db.log" "$MDB_LOG"
    die "mariadb: mariadb-install-db failed"
  fi
  mv "$MDB_DATA.init" "$MDB_DATA"
  log "mariadb: initialised in $(since "$t0")s"
}

# Idempotent: runs on every start, so a data dir made by an older version of
# this script (or a dropped user) is healed. Admin access is root over the unix
# socket (unix_socket auth, as created by mariadb-install-db).
mariadb_bootstrap_sql() {
  mariadb --defaults-file="$MDB_CNF" <<'SQL'
DROP USER IF EXISTS ''@'localhost';
CREATE DATABASE IF NOT EXISTS flashorder CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER IF NOT EXISTS 'flashorder'@'%' IDENTIFIED BY 'flashorder';
CREATE USER IF NOT EXISTS 'flashorder'@'localhost' IDENTIFIED BY 'flashorder';
-- Loopback-only dev server: tests create their own flashorder_test_* databases.
GRANT ALL PRIVILEGES ON *.* TO 'flashorder'@'%' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO 'flashorder'@'localhost' WITH GRANT OPTION;
FLUSH PRIVILEGES;
SQL
}

mariadb_up() {
  local pid t0
  t0=$(now)
  mkdir -p "$MDB_DIR"
  pid=$(mariadb_pid)
  if [[ -n $pid ]]; then
    ensure_same_port mariadb "$MDB_CNF" '^port = ([0-9]+)$' "$MARIADB_PORT"
    wait_ready mariadb "$MARIADB_READY_TIMEOUT" "$pid" mariadb_ping || { show_log_tail "$MDB_LOG"; die "mariadb: running (pid $pid) but not answering"; }
    log "mariadb: already running (pid $pid, 127.0.0.1:$MARIADB_PORT)"
    return 0
  fi
  rm -f "$MDB_PID"
  if port_open "$MARIADB_PORT"; then
    die "mariadb: port $MARIADB_PORT is already taken by another process ($(port_owner "$MARIADB_PORT")); stop it or set MARIADB_PORT"
  fi
  mariadb_write_config
  [[ -d $MDB_DATA/mysql ]] || mariadb_initialise
  # A crash can leave a stale socket file behind; mariadbd would refuse to bind.
  rm -f "$MDB_SOCK" "$MDB_SOCK.lock"
  start_detached "$MDB_DIR/mariadbd.launch.pid" "$MDB_DIR/mariadbd.out" \
    "$(mariadbd_bin)" --defaults-file="$MDB_CNF" "$(mariadb_user_opt)"
  pid=$(read_pidfile "$MDB_DIR/mariadbd.launch.pid")
  rm -f "$MDB_DIR/mariadbd.launch.pid"
  if ! wait_ready mariadb "$MARIADB_READY_TIMEOUT" "$pid" mariadb_ping; then
    show_log_tail "$MDB_LOG" "$MDB_DIR/mariadbd.out"
    die "mariadb: failed to start"
  fi
  mariadb_bootstrap_sql || { show_log_tail "$MDB_LOG"; die "mariadb: creating database/user failed"; }
  log "mariadb: up in $(since "$t0")s (pid $pid, 127.0.0.1:$MARIADB_PORT, socket $MDB_SOCK)"
}

mariadb_down() {
  local pid
  pid=$(mariadb_pid)
  if [[ -z $pid ]]; then
    log "mariadb: not running"
    rm -f "$MDB_PID"
    return 0
  fi
  # Clean shutdown via the server (flushes InnoDB); SIGTERM does the same if
  # the admin connection fails for some reason.
  mariadb-admin --defaults-file="$MDB_CNF" --connect-timeout=5 shutdown >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
  if ! wait_gone "$pid" 60; then
    terminate "$pid" mariadb 30
  fi
  log "mariadb: stopped"
}

mariadb_status() {
  local pid
  pid=$(mariadb_pid)
  if [[ -z $pid ]]; then
    echo "mariadb: stopped"
    return 3
  elif mariadb_ping >/dev/null 2>&1; then
    echo "mariadb: running (pid $pid, 127.0.0.1:$MARIADB_PORT, data $MDB_DATA)"
  else
    echo "mariadb: NOT RESPONDING (pid $pid, 127.0.0.1:$MARIADB_PORT; log $MDB_LOG)"
    return 3
  fi
}

# --------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------
RDS_DIR=$SERVICES_DIR/redis
RDS_CONF=$RDS_DIR/redis.conf
RDS_PID=$RDS_DIR/redis.pid
RDS_LOG=$RDS_DIR/redis.log

redis_write_config() {
  mkdir -p "$RDS_DIR/data"
  cat >"$RDS_CONF" <<EOF
# Generated by scripts/services.sh - edits are overwritten on the next start.
bind 127.0.0.1
port $REDIS_PORT
protected-mode yes
daemonize yes
supervised no
pidfile $RDS_PID
logfile $RDS_LOG
dir $RDS_DIR/data
# Pure cache/counters for dev and tests: no RDB snapshots, no AOF. A restart
# (e.g. the fault drills' down/up) starts with an empty Redis by design.
save ""
appendonly no
EOF
}

redis_pid() {
  local pid
  pid=$(read_pidfile "$RDS_PID")
  # redis-server rewrites its argv to "redis-server 127.0.0.1:PORT".
  if [[ -n $pid ]] && pid_matches "$pid" redis-server ":$REDIS_PORT"; then echo "$pid"; fi
}

redis_ping() { [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }

redis_up() {
  local pid t0
  t0=$(now)
  pid=$(redis_pid)
  if [[ -n $pid ]]; then
    ensure_same_port redis "$RDS_CONF" '^port ([0-9]+)$' "$REDIS_PORT"
    wait_ready redis "$REDIS_READY_TIMEOUT" "$pid" redis_ping || { show_log_tail "$RDS_LOG"; die "redis: running (pid $pid) but not answering"; }
    log "redis: already running (pid $pid, 127.0.0.1:$REDIS_PORT)"
    return 0
  fi
  rm -f "$RDS_PID"
  if port_open "$REDIS_PORT"; then
    die "redis: port $REDIS_PORT is already taken by another process ($(port_owner "$REDIS_PORT")); stop it or set REDIS_PORT"
  fi
  redis_write_config
  # daemonize yes: redis-server forks and writes its own pid file.
  # 9>&-: do not let the daemon inherit our lock fd (see start_detached).
  if ! redis-server "$RDS_CONF" >>"$RDS_DIR/redis.out" 2>&1 </dev/null 9>&-; then
    show_log_tail "$RDS_LOG" "$RDS_DIR/redis.out"
    die "redis: redis-server failed to start"
  fi
  wait_ready redis 10 "" test -s "$RDS_PID" || { show_log_tail "$RDS_LOG"; die "redis: no pid file"; }
  pid=$(read_pidfile "$RDS_PID")
  if ! wait_ready redis "$REDIS_READY_TIMEOUT" "$pid" redis_ping; then
    show_log_tail "$RDS_LOG" "$RDS_DIR/redis.out"
    die "redis: failed to start"
  fi
  log "redis: up in $(since "$t0")s (pid $pid, 127.0.0.1:$REDIS_PORT)"
}

redis_down() {
  local pid
  pid=$(redis_pid)
  if [[ -z $pid ]]; then
    log "redis: not running"
    rm -f "$RDS_PID"
    return 0
  fi
  redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  if ! wait_gone "$pid" 15; then
    terminate "$pid" redis 15
  fi
  rm -f "$RDS_PID"
  log "redis: stopped"
}

redis_status() {
  local pid
  pid=$(redis_pid)
  if [[ -z $pid ]]; then
    echo "redis: stopped"
    return 3
  elif redis_ping; then
    echo "redis: running (pid $pid, 127.0.0.1:$REDIS_PORT)"
  else
    echo "redis: NOT RESPONDING (pid $pid, 127.0.0.1:$REDIS_PORT; log $RDS_LOG)"
    return 3
  fi
}

# --------------------------------------------------------------------------
# Kafka (single-node KRaft, jars from Maven Central)
# --------------------------------------------------------------------------
KFK_DIR=$SERVICES_DIR/kafka
KFK_LIBS=$KFK_DIR/libs
KFK_DATA=$KFK_DIR/data
KFK_PROPS=$KFK_DIR/server.properties
KFK_PID=$KFK_DIR/kafka.pid
KFK_OUT=$KFK_DIR/kafka.out
KFK_LOGDIR=$KFK_DIR/logs
KFK_POM=$REPO_ROOT/deploy/kafka/pom.xml
KFK_LOG4J=$REPO_ROOT/deploy/kafka/log4j2.xml

kafka_pid() {
  local pid
  pid=$(read_pidfile "$KFK_PID")
  if [[ -n $pid ]] && pid_matches "$pid" kafka.Kafka "$KFK_PROPS"; then echo "$pid"; fi
}

# The libs are keyed on the pom's checksum: a version bump re-copies them.
# Copied into a scratch dir and swapped in, so an interrupted download never
# leaves a half-populated classpath that looks complete.
kafka_ensure_libs() {
  local stamp t0
  stamp=$(sha256sum "$KFK_POM" | cut -d' ' -f1)
  if [[ -f $KFK_LIBS/.pom.sha256 && $(cat "$KFK_LIBS/.pom.sha256") == "$stamp" ]]; then
    return 0
  fi
  t0=$(now)
  log "kafka: fetching broker jars with Maven ($KFK_POM) -> $KFK_LIBS"
  rm -rf "$KFK_LIBS.tmp"
  mkdir -p "$KFK_DIR"
  if ! mvn -B -q -f "$KFK_POM" dependency:copy-dependencies \
    -DoutputDirectory="$KFK_LIBS.tmp" -DincludeScope=runtime >"$KFK_DIR/mvn.log" 2>&1; then
    show_log_tail "$KFK_DIR/mvn.log"
    die "kafka: maven could not fetch the Kafka jars"
  fi
  echo "$stamp" >"$KFK_LIBS.tmp/.pom.sha256"
  rm -rf "$KFK_LIBS"
  mv "$KFK_LIBS.tmp" "$KFK_LIBS"
  # maven-dependency-plugin leaves an empty target/ next to the pom; drop it.
  rmdir "$REPO_ROOT/deploy/kafka/target" 2>/dev/null || true
  log "kafka: $(find "$KFK_LIBS" -name '*.jar' | wc -l) jars in place after $(since "$t0")s"
}

kafka_write_config() {
  mkdir -p "$KFK_DATA" "$KFK_LOGDIR"
  cat >"$KFK_PROPS" <<EOF
# Generated by scripts/services.sh - edits are overwritten on the next start.
# Single-node KRaft: this JVM is both the broker and the (only) controller.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KFK_DATA

# One broker: every internal topic must live with replication factor 1.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
default.replication.factor=1
min.insync.replicas=1

# The app creates its topics explicitly; typos must fail, not create topics.
auto.create.topics.enable=false
num.partitions=6
# Tests start consumers constantly; do not wait 3 s for more group members.
group.initial.rebalance.delay.ms=0
EOF
}

# Short-lived Kafka CLI JVMs (StorageTool): small heap, C1 only for quick start.
kafka_run_class() {
  java -Xms64m -Xmx256m -XX:TieredStopAtLevel=1 -Dkafka.logs.dir="$KFK_LOGDIR" -Dlog4j2.configurationFile="$KFK_LOG4J" \
    -cp "$KFK_LIBS/*" "$@"
}

# Format the metadata log once. meta.properties is written by the format step,
# so its presence means "formatted"; anything else in the dir is debris from an
# interrupted format and is safe to clear (it is all under .services/kafka/data).
kafka_format() {
  [[ -f $KFK_DATA/meta.properties ]] && return 0
  local cluster_id
  log "kafka: formatting KRaft storage in $KFK_DATA (first start)"
  rm -rf "$KFK_DATA"
  mkdir -p "$KFK_DATA"
  cluster_id=$(kafka_run_class kafka.tools.StorageTool random-uuid 2>>"$KFK_DIR/format.log" | tail -n1)
  [[ -n $cluster_id ]] || { show_log_tail "$KFK_DIR/format.log"; die "kafka: StorageTool random-uuid failed"; }
  # --standalone: a dynamic (KIP-853) quorum whose single voter is this node.
  if ! kafka_run_class kafka.tools.StorageTool format --standalone -t "$cluster_id" -c "$KFK_PROPS" \
    >>"$KFK_DIR/format.log" 2>&1; then
    show_log_tail "$KFK_DIR/format.log"
    die "kafka: StorageTool format failed"
  fi
}

# Kafka readiness: a real Metadata (v4) request over the wire, stdlib only, that
# must come back listing at least one broker. A bare TCP connect is not enough:
# the socket server accepts connections before the broker has caught up with
# the metadata log and been unfenced.
kafka_metadata_check() {
  python3 - "$KAFKA_PORT" <<'PY'
import socket, struct, sys

port = int(sys.argv[1])
client_id = b"flashorder-services.sh"
# Request header v1 (api_key=3 Metadata, api_version=4, correlation_id, client_id)
# + MetadataRequest v4 body (topics=null -> all, allow_auto_topic_creation=false).
req = struct.pack(">hhih", 3, 4, 7, len(client_id)) + client_id + struct.pack(">ib", -1, 0)

def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise OSError("connection closed by broker")
        buf += chunk
    return buf

try:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.settimeout(5)
        s.sendall(struct.pack(">i", len(req)) + req)
        (size,) = struct.unpack(">i", recv_exact(s, 4))
        resp = recv_exact(s, size)
except OSError as exc:
    print(f"kafka metadata request failed: {exc}", file=sys.stderr)
    sys.exit(1)

corr, _throttle, n_brokers = struct.unpack_from(">iii", resp, 0)
if corr != 7 or n_brokers < 1:
    print(f"kafka metadata: no brokers yet (corr={corr}, brokers={n_brokers})", file=sys.stderr)
    sys.exit(1)
off = 12
node_id, = struct.unpack_from(">i", resp, off); off += 4
hlen, = struct.unpack_from(">h", resp, off); off += 2
host = resp[off:off + hlen].decode(); off += hlen
bport, = struct.unpack_from(">i", resp, off)
print(f"broker {node_id} at {host}:{bport}")
PY
}

kafka_up() {
  local pid t0
  t0=$(now)
  pid=$(kafka_pid)
  if [[ -n $pid ]]; then
    ensure_same_port kafka "$KFK_PROPS" '^advertised\.listeners=PLAINTEXT:\/\/127\.0\.0\.1:([0-9]+)$' "$KAFKA_PORT"
    if ! wait_ready kafka "$KAFKA_READY_TIMEOUT" "$pid" kafka_metadata_check; then
      show_log_tail "$KFK_LOGDIR/server.log" "$KFK_OUT"
      die "kafka: running (pid $pid) but not answering metadata requests"
    fi
    log "kafka: already running (pid $pid, 127.0.0.1:$KAFKA_PORT)"
    return 0
  fi
  rm -f "$KFK_PID"
  local p
  for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
    if port_open "$p"; then
      die "kafka: port $p is already taken by another process ($(port_owner "$p")); stop it or set KAFKA_PORT/KAFKA_CONTROLLER_PORT"
    fi
  done
  kafka_ensure_libs
  kafka_write_config
  kafka_format
  # cwd = the kafka dir so a JVM crash file (hs_err_pid*.log) lands there.
  # shellcheck disable=SC2086 # KAFKA_HEAP_OPTS/KAFKA_JVM_OPTS are lists of JVM flags
  (cd "$KFK_DIR" && start_detached "$KFK_PID" "$KFK_OUT" \
    java $KAFKA_HEAP_OPTS $KAFKA_JVM_OPTS \
    -Dkafka.logs.dir="$KFK_LOGDIR" -Dlog4j2.configurationFile="$KFK_LOG4J" \
    -cp "$KFK_LIBS/*" kafka.Kafka "$KFK_PROPS")
  pid=$(read_pidfile "$KFK_PID")
  if ! wait_ready kafka "$KAFKA_READY_TIMEOUT" "$pid" kafka_metadata_check; then
    show_log_tail "$KFK_LOGDIR/server.log" "$KFK_OUT"
    die "kafka: failed to start (pid $pid)"
  fi
  log "kafka: up in $(since "$t0")s (pid $pid, 127.0.0.1:$KAFKA_PORT, controller :$KAFKA_CONTROLLER_PORT)"
}

kafka_down() {
  local pid
  pid=$(kafka_pid)
  if [[ -z $pid ]]; then
    log "kafka: not running"
    rm -f "$KFK_PID"
    return 0
  fi
  # SIGTERM runs the broker's controlled shutdown (flushes, closes the log
  # cleanly so the next start skips recovery); SIGKILL only after 30 s.
  terminate "$pid" kafka 30
  rm -f "$KFK_PID"
  log "kafka: stopped"
}

kafka_status() {
  local pid info
  pid=$(kafka_pid)
  if [[ -z $pid ]]; then
    echo "kafka: stopped"
    return 3
  elif info=$(kafka_metadata_check 2>/dev/null); then
    echo "kafka: running (pid $pid, 127.0.0.1:$KAFKA_PORT, $info)"
  else
    echo "kafka: NOT RESPONDING (pid $pid, 127.0.0.1:$KAFKA_PORT; log $KFK_LOGDIR/server.log)"
    return 3
  fi
}

# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------
usage() {
  sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# One `up`/`down` at a time per services dir (two shells, or CI plus a human).
take_lock() {
  mkdir -p "$SERVICES_DIR"
  exec 9>"$SERVICES_DIR/.lock"
  flock -w 300 9 || die "another scripts/services.sh is holding $SERVICES_DIR/.lock"
}

main() {
  (($# >= 1)) || usage
  local cmd=$1
  shift
  local names=("$@") name
  ((${#names[@]})) || names=("${ALL_SERVICES[@]}")
  for name in "${names[@]}"; do
    case $name in mariadb | redis | kafka) ;; *) die "unknown service '$name' (expected: ${ALL_SERVICES[*]})" ;; esac
  done

  case $cmd in
    up | start)
      take_lock
      ensure_tools "${names[@]}"
      for name in "${names[@]}"; do "${name}_up"; done
      ;;
    down | stop)
      take_lock
      for name in "${names[@]}"; do "${name}_down"; done
      ;;
    restart)
      take_lock
      ensure_tools "${names[@]}"
      for name in "${names[@]}"; do "${name}_down"; done
      for name in "${names[@]}"; do "${name}_up"; done
      ;;
    status)
      local rc=0
      for name in "${names[@]}"; do "${name}_status" || rc=3; done
      return $rc
      ;;
    -h | --help | help) usage ;;
    *) usage ;;
  esac
}

# Sourced (scripts/cluster.sh reuses the helpers above), it only defines them.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  main "$@"
fi
