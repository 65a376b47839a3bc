#!/usr/bin/env bash
# A local try-out of cluster mode, all on loopback: PostgreSQL (the inbox and the event log),
# Redis (live fan-out) or a Redis Cluster, three Switchboard nodes, and nginx in front of
# them (config/nginx.conf). Ctrl-C stops everything and removes what it made.
#
#   scripts/cluster-up.sh                   # nginx on 127.0.0.1:8080, nodes on 8081-8083
#   scripts/cluster-up.sh --redis-cluster   # a Redis Cluster of 3 primaries + 3 replicas
#   PORT=9000 scripts/cluster-up.sh         # nginx on 9000, nodes on 9001-9003
#
# It needs nginx, redis-server (and redis-cli), PostgreSQL's server binaries (initdb,
# postgres, pg_isready, createdb), curl, and cargo to build the hub; it says which are
# missing before it starts anything.
#
# Ports, from PORT (8080): nginx PORT, nodes PORT+1..PORT+3, Redis PORT+10 (a cluster:
# PORT+10..PORT+15, and their bus ports 10000 above), PostgreSQL PORT+20. Every one must be
# free; the script stops at once, naming the port, if one is taken.
#
# Environment:
#   PORT              nginx's port (8080)
#   POSTGRES_URL      an existing database to use instead of a private server (it must exist)
#   REDIS_URL         an existing Redis to use instead of a private one
#   SWITCHBOARD_BIN   a built `switchboard` to run instead of building one
#   CARGO_TARGET_DIR  where the hub is built (target/), as cargo does
#   KEEP_RUN_DIR=1    keep the temporary folder (logs, data) after stopping
#
# PostgreSQL is a private server by default, made by `initdb` in the temporary folder (as the
# `postgres` OS user when run as root, which PostgreSQL requires): the try-out then needs no
# database set up, leaves nothing behind in a server of the machine, and can be stopped and
# started (pg_ctl) to try an outage without touching anyone else's data.
#
# Tokens: "$BIN" token --sub sam --tenant acme --roles user --locations L1 (the path is printed).
set -euo pipefail
cd "$(dirname "$0")/.."

REDIS_CLUSTER=0
for arg in "$@"; do
    case $arg in
    --redis-cluster) REDIS_CLUSTER=1 ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "unknown argument: $arg (see --help)" >&2
        exit 2
        ;;
    esac
done

PORT=${PORT:-8080}
PREFIX=switchboard

fail() {
    echo "cluster-up: $*" >&2
    exit 1
}

[[ $PORT =~ ^[0-9]+$ ]] && ((PORT >= 1024 && PORT <= 55500)) || fail "PORT must be a number in 1024-55500, not '$PORT'"

# --- What it needs, said up front --------------------------------------------------------
pg_bindir() {
    local dir
    dir=$(pg_config --bindir 2>/dev/null || true)
    if [[ -n $dir && -x $dir/initdb ]]; then
        echo "$dir"
        return
    fi
    # Debian's layout: the newest /usr/lib/postgresql/<major>/bin.
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -n | tail -n1
}
missing=()
command -v nginx >/dev/null || missing+=("nginx (apt-get install nginx-light)")
command -v redis-server >/dev/null || [[ -n ${REDIS_URL:-} && $REDIS_CLUSTER == 0 ]] ||
    missing+=("redis-server (apt-get install redis-server)")
command -v redis-cli >/dev/null || missing+=("redis-cli (apt-get install redis-tools)")
command -v curl >/dev/null || missing+=("curl (apt-get install curl)")
if [[ -z ${POSTGRES_URL:-} ]]; then
    PG_BIN=$(pg_bindir)
    for tool in initdb postgres pg_ctl pg_isready createdb; do
        [[ -n $PG_BIN && -x $PG_BIN/$tool ]] || {
            missing+=("PostgreSQL's server binaries: $tool (apt-get install postgresql)")
            break
        }
    done
    if [[ $(id -u) == 0 ]]; then
        id -u postgres >/dev/null 2>&1 || missing+=("the postgres OS user (apt-get install postgresql makes it)")
        command -v setpriv >/dev/null || missing+=("setpriv (apt-get install util-linux)")
    fi
fi
[[ -n ${SWITCHBOARD_BIN:-} ]] || command -v cargo >/dev/null || missing+=("cargo (or SWITCHBOARD_BIN=path/to/switchboard)")
if ((${#missing[@]})); then
    echo "cluster-up needs nginx, redis-server, PostgreSQL's server binaries, curl and cargo; missing:" >&2
    printf '  - %s\n' "${missing[@]}" >&2
    exit 1
fi
[[ -n ${REDIS_URL:-} && $REDIS_CLUSTER == 1 ]] && fail "REDIS_URL and --redis-cluster do not go together"

# --- Ports: every one free, before anything starts -----------------------------------------
NODES=("$((PORT + 1))" "$((PORT + 2))" "$((PORT + 3))")
PG_PORT=$((PORT + 20))
REDIS_PORTS=()
if [[ -z ${REDIS_URL:-} ]]; then
    if ((REDIS_CLUSTER)); then
        REDIS_PORTS=($(seq $((PORT + 10)) $((PORT + 15))))
    else
        REDIS_PORTS=("$((PORT + 10))")
    fi
fi
# A port is taken when something accepts a connection on it on loopback.
taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
check_port() {
    ! taken "$1" || fail "port $1 ($2) is taken: something already listens on 127.0.0.1:$1. Stop it, or choose other ports with PORT=..."
}
check_port "$PORT" nginx
for i in 0 1 2; do check_port "${NODES[$i]}" "node $((i + 1))"; done
for p in "${REDIS_PORTS[@]}"; do
    check_port "$p" redis
    ((REDIS_CLUSTER)) && check_port $((p + 10000)) "redis cluster bus"
done
[[ -n ${POSTGRES_URL:-} ]] || check_port "$PG_PORT" postgresql

# --- The hub's binary --------------------------------------------------------------------
if [[ -n ${SWITCHBOARD_BIN:-} ]]; then
    BIN=$SWITCHBOARD_BIN
else
    echo "building the hub (cargo build --release) into ${CARGO_TARGET_DIR:-target}/release"
    cargo build --release --bin switchboard || fail "the build failed"
    BIN=${CARGO_TARGET_DIR:-target}/release/switchboard
fi
[[ -x $BIN ]] || fail "no hub binary at $BIN"
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

# --- Start, and stop on any exit ---------------------------------------------------------
RUN=$(mktemp -d -t switchboard-cluster.XXXXXX)
# The postgres OS user must reach its data folder in here; nginx's workers run as nobody.
chmod 711 "$RUN"
mkdir -p "$RUN"/{client_body,proxy,fastcgi,uwsgi,scgi}

# Everything runs as a child of this script (nginx too, with `daemon off;`). Stopping: nginx
# and the nodes first (SIGTERM: the nodes close their sessions with 1001 and drain), then
# Redis, then PostgreSQL (SIGINT: fast shutdown); then the temporary folder goes.
front=()   # nginx and the nodes
back=()    # Redis and PostgreSQL, stopped after them
declare -A names=()   # pid -> what it is
started=0
cleanup() {
    local status=$?
    # A second Ctrl-C (a terminal sends it to every process of the group at once, `timeout`
    # forwards it again) must not cut the cleanup short.
    trap - EXIT
    trap '' INT TERM
    for pid in "${front[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${front[@]}"; do wait "$pid" 2>/dev/null || true; done
    for pid in "${back[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
    for pid in "${back[@]}"; do wait "$pid" 2>/dev/null || true; done
    # A PostgreSQL restarted by hand with pg_ctl is no child of this script: stop it too.
    if [[ -f $RUN/pg/data/postmaster.pid ]]; then
        "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$RUN/pg/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    if [[ ${KEEP_RUN_DIR:-0} == 1 ]]; then
        echo "stopped; logs and data are in $RUN" >&2
    else
        rm -rf "$RUN"
        ((started)) && echo "stopped" >&2
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Prints the end of log files, for a failure's message.
tail_log() {
    local f
    for f in "$@"; do
        [[ -s $f ]] || continue
        echo "--- the end of $(basename "$f"):" >&2
        tail -n 15 "$f" >&2
    done
}

# Polls (bounded: 300 tries 0.1 s apart, each check bounded too: curl gets --max-time) until
# "$@" succeeds; fails if process $2 (pid) exits first or the time runs out, with the end of
# the logs in $3 (a space-separated list).
await() {
    local what=$1 pid=$2 log=$3
    shift 3
    for _ in $(seq 300); do
        "$@" >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || {
            # shellcheck disable=SC2086
            tail_log $log
            fail "$what exited while starting"
        }
        sleep 0.1
    done
    # shellcheck disable=SC2086
    tail_log $log
    fail "$what did not come up within 30 s"
}

# The words that run a PostgreSQL program as the postgres OS user (as root; PostgreSQL refuses
# to run as root): a prefix, not a function, so that `"${AS_PG[@]}" postgres … &` is the server
# itself (setpriv execs it), which the cleanup signals.
AS_PG=()
[[ $(id -u) != 0 ]] || AS_PG=(setpriv --reuid=postgres --regid=postgres --init-groups --)

if [[ -z ${POSTGRES_URL:-} ]]; then
    mkdir -p "$RUN/pg"
    [[ $(id -u) == 0 ]] && chown postgres:postgres "$RUN/pg"
    "${AS_PG[@]}" "$PG_BIN/initdb" -D "$RUN/pg/data" -U postgres -A trust -E UTF8 --locale=C --no-sync \
        >"$RUN/pg/initdb.log" 2>&1 || {
        tail_log "$RUN/pg/initdb.log"
        fail "initdb failed"
    }
    # In the cluster's own configuration, so that `pg_ctl stop` / `pg_ctl start` (trying an
    # outage) bring it back the same.
    cat >>"$RUN/pg/data/postgresql.conf" <<EOF
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$RUN/pg'
EOF
    "${AS_PG[@]}" "$PG_BIN/postgres" -D "$RUN/pg/data" >"$RUN/postgres.log" 2>&1 &
    back+=($!)
    names[$!]="postgresql ($PG_PORT)"
    await "postgresql on $PG_PORT" "$!" "$RUN/postgres.log" "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"
    "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres switchboard || fail "createdb failed"
    POSTGRES_URL="postgres://postgres@127.0.0.1:$PG_PORT/switchboard"
fi

start_redis() {
    local port=$1
    shift
    mkdir -p "$RUN/redis-$port"
    # Redis only carries live events here: no persistence. DEBUG SLEEP (a hung Redis, to try
    # an outage) from loopback.
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --enable-debug-command local \
        --dir "$RUN/redis-$port" \
        --logfile "$RUN/redis-$port/redis.log" "$@" &
    back+=($!)
    names[$!]="redis ($port)"
    await "redis-server on $port" "$!" "$RUN/redis-$port/redis.log" redis-cli -p "$port" ping
}
REDIS_ENV=()
if [[ -n ${REDIS_URL:-} ]]; then
    REDIS_ENV=(SWITCHBOARD__REDIS__URL="$REDIS_URL")
    REDIS_SAID=$REDIS_URL
elif ((REDIS_CLUSTER)); then
    for p in "${REDIS_PORTS[@]}"; do
        start_redis "$p" --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000
    done
    addrs=()
    for p in "${REDIS_PORTS[@]}"; do addrs+=("127.0.0.1:$p"); done
    redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >"$RUN/redis-cluster-create.log" 2>&1 || {
        tail_log "$RUN/redis-cluster-create.log"
        fail "redis-cli --cluster create failed"
    }
    cluster_ok() {
        local p
        for p in "${REDIS_PORTS[@]}"; do
            redis-cli -p "$p" cluster info | grep -q '^cluster_state:ok' || return 1
        done
    }
    await "the Redis Cluster" "${back[-1]}" "$RUN/redis-cluster-create.log" cluster_ok
    urls=()
    for p in "${REDIS_PORTS[@]:0:3}"; do urls+=("redis://127.0.0.1:$p"); done
    REDIS_ENV=(SWITCHBOARD__REDIS__CLUSTER_NODES="$(IFS=,; echo "${urls[*]}")")
    REDIS_SAID="cluster ${urls[*]} (+ 3 replicas)"
else
    start_redis "${REDIS_PORTS[0]}"
    REDIS_ENV=(SWITCHBOARD__REDIS__URL="redis://127.0.0.1:${REDIS_PORTS[0]}")
    REDIS_SAID="redis://127.0.0.1:${REDIS_PORTS[0]}"
fi

node_pids=()
for i in 0 1 2; do
    env SWITCHBOARD__SERVER__BIND="127.0.0.1:${NODES[$i]}" \
        SWITCHBOARD__STORAGE__BACKEND=postgres \
        SWITCHBOARD__BUS__BACKEND=redis \
        SWITCHBOARD__POSTGRES__URL="$POSTGRES_URL" \
        SWITCHBOARD__REDIS__KEY_PREFIX="$PREFIX" \
        "${REDIS_ENV[@]}" \
        "$BIN" serve >"$RUN/node$((i + 1)).log" 2>&1 &
    front+=($!)
    node_pids+=($!)
done
for i in 0 1 2; do
    await "node $((i + 1)) on ${NODES[$i]}" "${node_pids[$i]}" "$RUN/node$((i + 1)).log" \
        curl -fs --max-time 5 "http://127.0.0.1:${NODES[$i]}/readyz"
done

sed -e "s|@RUN@|$RUN|g" -e "s|@LISTEN@|127.0.0.1:$PORT|" \
    -e "s|@NODE1@|127.0.0.1:${NODES[0]}|" -e "s|@NODE2@|127.0.0.1:${NODES[1]}|" -e "s|@NODE3@|127.0.0.1:${NODES[2]}|" \
    config/nginx.conf >"$RUN/nginx.conf"
nginx -p "$RUN" -c "$RUN/nginx.conf" -g 'daemon off;' >"$RUN/nginx-stderr.log" 2>&1 &
nginx_pid=$!
front+=("$nginx_pid")
# nginx answers only once it has bound its port: it writes its pid file after binding, and
# exits (after a few retries) when it cannot. The pid file naming our nginx, and an answer on
# PORT through nginx, mean our nginx is the one answering there.
ours() {
    local answer
    [[ $(cat "$RUN/nginx.pid" 2>/dev/null) == "$nginx_pid" ]] &&
        answer=$(curl -fsi --max-time 5 "http://127.0.0.1:$PORT/healthz") &&
        grep -qi '^server: nginx' <<<"$answer"
}
await "nginx on $PORT" "$nginx_pid" "$RUN/nginx-stderr.log" ours

started=1
cat <<EOF
Switchboard cluster: http://127.0.0.1:$PORT (nginx)
  nodes      ${NODES[*]}
  postgresql $POSTGRES_URL
  redis      $REDIS_SAID
  binary     $BIN
  logs       $RUN
Ctrl-C stops everything.
EOF

# Until Ctrl-C. A process that exits on its own (a node killed to try a failure, say) is
# reported and the rest keep running.
for i in 0 1 2; do names[${node_pids[$i]}]="node $((i + 1)) (${NODES[$i]})"; done
names[$nginx_pid]="nginx"
running=("${front[@]}" "${back[@]}")
while ((${#running[@]})); do
    gone=
    set +e
    wait -n -p gone "${running[@]}"
    status=$?
    set -e
    [[ -n $gone ]] || continue
    echo "cluster-up: ${names[$gone]:-a server (pid $gone)} exited (status $status); the rest keep running, Ctrl-C stops everything" >&2
    left=()
    for pid in "${running[@]}"; do [[ $pid == "$gone" ]] || left+=("$pid"); done
    running=("${left[@]}")
done
fail "every process of the cluster has exited"
