#!/usr/bin/env bash
# Local servers for operating Stockcast as in production: an MLflow tracking server on a
# PostgreSQL backend store, serving the artifacts itself, and a Prefect server.
#
#   eval "$(scripts/servers.sh up)"          start PostgreSQL, MLflow and Prefect, print the exports
#   eval "$(scripts/servers.sh up mlflow)"   PostgreSQL and MLflow only (`up prefect`: Prefect only)
#   scripts/servers.sh env                   print the exports of the running servers
#   scripts/servers.sh status                say what runs where (exit 1 unless all three run)
#   scripts/servers.sh down                  stop them; their data stays for the next `up`
#   scripts/servers.sh purge                 stop them and delete their data
#
# stdout carries only `export VAR=value` lines; progress and errors go to stderr. `up` is
# idempotent: a server already answering is left as it is.
#
# Everything lives under $STOCKCAST_SERVERS_DIR (default ~/.stockcast/servers): postgres/ (the
# cluster, made by initdb on the first `up`), artifacts/ (what MLflow serves: runs' artifacts
# and registered models), prefect/ (PREFECT_HOME of the Prefect server: its SQLite database),
# run/ (pids, ports, logs, the database password). Every server listens on 127.0.0.1 only.
#
# PostgreSQL refuses to run as root. Run as root (containers, CI), initdb and postgres run as
# the unprivileged user $STOCKCAST_PG_USER (default postgres, the Debian package's; else
# nobody) through setpriv. When that user cannot reach $STOCKCAST_SERVERS_DIR (e.g. under
# /root), the cluster goes to <that user's home>/stockcast/<hash of the folder> instead, or to
# $STOCKCAST_PG_DATA when set; `status` says where.
#
# The cluster's superuser is `stockcast` with a random password (run/postgres.password, mode
# 600); MLflow's backend store is its database `mlflow`. MLflow and Prefect run from the
# project's environment (.venv, `make install`; psycopg2-binary comes with the bigquery extra).
#
# Settings (environment): STOCKCAST_SERVERS_DIR, STOCKCAST_PG_PORT (5433),
# STOCKCAST_MLFLOW_PORT (5000), STOCKCAST_PREFECT_PORT (4200), STOCKCAST_PG_BIN (folder of
# initdb/postgres; default: found on PATH or /usr/lib/postgresql/*/bin), STOCKCAST_PG_USER,
# STOCKCAST_PG_DATA, STOCKCAST_SERVERS_PYTHON (default .venv/bin/python). A port already taken
# by another program is replaced by a free one (the exports say which).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${STOCKCAST_SERVERS_DIR:-$HOME/.stockcast/servers}"
RUN="$DIR/run"
HOST=127.0.0.1
PY="${STOCKCAST_SERVERS_PYTHON:-$REPO/.venv/bin/python}"
DB_USER=stockcast
DB_NAME=mlflow

log() { echo "servers: $*" >&2; }
die() { log "$*"; exit 1; }

# Servers run in a session of their own: a Ctrl-C or a kill of the caller's process group
# (e.g. a test runner) does not stop them; `down` does. setsid also makes each one a process
# group of its own, which `down` stops whole (MLflow's workers are child processes).
if command -v setsid >/dev/null 2>&1; then DETACH="setsid nohup"; else DETACH=nohup; fi

need_python() {
    [[ -x "$PY" ]] || die "no Python environment at $PY: run \`make install\` (or set STOCKCAST_SERVERS_PYTHON)"
}

# -- PostgreSQL binaries and user -------------------------------------------------------------
pg_bin() {
    if [[ -n "${STOCKCAST_PG_BIN:-}" ]]; then
        echo "$STOCKCAST_PG_BIN"
    elif command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v postgres)")"
    else
        local found
        found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
        [[ -n "$found" ]] || die "PostgreSQL not found: install it (apt-get install postgresql) or set STOCKCAST_PG_BIN to the folder of initdb and postgres"
        echo "$found"
    fi
}

pg_user() {  # the user postgres runs as when we are root
    if [[ -n "${STOCKCAST_PG_USER:-}" ]]; then
        echo "$STOCKCAST_PG_USER"
    elif id postgres >/dev/null 2>&1; then
        echo postgres
    else
        echo nobody
    fi
}

# The prefix that runs a command as the PostgreSQL user: none unless we are root. setpriv
# execs (the pid stays the server's, for `down`), unlike su and runuser.
AS_PG=()
if [[ "$(id -u)" == 0 ]]; then
    command -v setpriv >/dev/null 2>&1 || die "running as root needs setpriv (util-linux) to start PostgreSQL as an unprivileged user"
    PG_USER=$(pg_user)
    AS_PG=(setpriv --reuid "$PG_USER" --regid "$(id -g "$PG_USER")" --init-groups --)
fi

as_pg() { "${AS_PG[@]}" "$@"; }

pg_datadir() {  # where the cluster is (recorded by the first `up`)
    if [[ -f "$RUN/postgres.datadir" ]]; then
        cat "$RUN/postgres.datadir"
        return
    fi
    local data="${STOCKCAST_PG_DATA:-$DIR/postgres}"
    if [[ "$(id -u)" == 0 && -z "${STOCKCAST_PG_DATA:-}" ]]; then
        local user home
        user=$(pg_user)
        mkdir -p "$data"
        chown "$user" "$data"
        if ! (cd / && as_pg test -w "$data"); then
            rmdir "$data" 2>/dev/null || true
            home=$(getent passwd "$user" | cut -d: -f6)
            data="$home/stockcast/$(echo -n "$DIR" | sha1sum | cut -c1-12)"
            (cd / && as_pg mkdir -p "$data") 2>/dev/null \
                || die "$user cannot reach $DIR nor write $home: set STOCKCAST_PG_DATA to a folder $user can write"
            log "$user cannot reach $DIR: the PostgreSQL cluster goes to $data"
        fi
    fi
    mkdir -p "$RUN"
    echo "$data" >"$RUN/postgres.datadir"
    echo "$data"
}

# -- processes --------------------------------------------------------------------------------
alive() { [[ -f "$RUN/$1.pid" ]] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

port_free() {
    "$PY" - "$1" <<'EOF'
import socket, sys
s = socket.socket()
# As the servers bind: a port left in TIME_WAIT by a server just stopped counts as free.
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
EOF
}

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

pick_port() {  # preferred
    if port_free "$1"; then echo "$1"; else free_port; fi
}

answers() {  # url
    "$PY" - "$1" <<'EOF'
import sys, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=2).read()
except Exception:
    sys.exit(1)
EOF
}

pg_ready() { "$(pg_bin)/pg_isready" -q -h "$HOST" -p "$(cat "$RUN/postgres.port")" -t 2; }

wait_until() {  # name seconds command...
    local name="$1" deadline=$((SECONDS + $2))
    shift 2
    until "$@"; do
        if ! alive "$name"; then
            tail -n 20 "$RUN/$name.log" >&2 || true
            die "$name exited during start (log: $RUN/$name.log)"
        fi
        ((SECONDS < deadline)) || die "$name did not answer within $2 s (log: $RUN/$name.log)"
        sleep 0.3
    done
}

mlflow_url() { echo "http://$HOST:$(cat "$RUN/mlflow.port")"; }
prefect_url() { echo "http://$HOST:$(cat "$RUN/prefect.port")/api"; }

password() {
    if [[ ! -s "$RUN/postgres.password" ]]; then
        (umask 077 && "$PY" -c 'import secrets; print(secrets.token_hex(16))' >"$RUN/postgres.password")
    fi
    cat "$RUN/postgres.password"
}

psql_mlflow() {  # sql: run on the maintenance database as the superuser
    PGPASSWORD="$(password)" "$(pg_bin)/psql" -h "$HOST" -p "$(cat "$RUN/postgres.port")" \
        -U "$DB_USER" -d postgres -v ON_ERROR_STOP=1 -qtAc "$1"
}

init_postgres() {  # data
    local data="$1" bin pwfile
    bin=$(pg_bin)
    [[ -f "$data/PG_VERSION" ]] && return 0
    log "creating the PostgreSQL cluster in $data (initdb)"
    mkdir -p "$data"
    [[ "$(id -u)" == 0 ]] && chown "$(pg_user)" "$data"
    chmod 700 "$data"
    # initdb reads the password as the PostgreSQL user: a copy it can read, removed at once.
    pwfile=$(mktemp)
    password >"$pwfile"
    [[ "$(id -u)" == 0 ]] && chown "$(pg_user)" "$pwfile"
    if ! (cd / && as_pg "$bin/initdb" -D "$data" -U "$DB_USER" --pwfile="$pwfile" \
        --auth-local=scram-sha-256 --auth-host=scram-sha-256 -E UTF8 --no-locale \
        >"$RUN/initdb.log" 2>&1); then
        rm -f "$pwfile"
        tail -n 20 "$RUN/initdb.log" >&2 || true
        die "initdb failed (log: $RUN/initdb.log)"
    fi
    rm -f "$pwfile"
}

start_postgres() {
    local data port bin
    bin=$(pg_bin)
    [[ -x "$bin/postgres" && -x "$bin/initdb" ]] || die "no initdb/postgres in $bin: install PostgreSQL or set STOCKCAST_PG_BIN"
    data=$(pg_datadir)
    init_postgres "$data"
    port=$(pick_port "${STOCKCAST_PG_PORT:-5433}")
    echo "$port" >"$RUN/postgres.port"
    log "starting PostgreSQL on $HOST:$port (data $data)"
    # TCP on loopback only, no Unix socket (its default folder belongs to the system's cluster).
    (
        cd /
        $DETACH "${AS_PG[@]}" "$bin/postgres" -D "$data" -p "$port" \
            -c listen_addresses="$HOST" -c unix_socket_directories= \
            >"$RUN/postgres.log" 2>&1 </dev/null 9>&- &
        echo $! >"$RUN/postgres.pid"
    )
    wait_until postgres 60 pg_ready
    if [[ -z "$(psql_mlflow "select 1 from pg_database where datname = '$DB_NAME'")" ]]; then
        log "creating the database $DB_NAME"
        psql_mlflow "create database $DB_NAME"
    fi
}

start_mlflow() {
    local port
    port=$(pick_port "${STOCKCAST_MLFLOW_PORT:-5000}")
    echo "$port" >"$RUN/mlflow.port"
    mkdir -p "$DIR/artifacts"
    log "starting MLflow on $HOST:$port (backend postgresql://$HOST:$(cat "$RUN/postgres.port")/$DB_NAME, artifacts $DIR/artifacts)"
    # The backend URI (with its password) goes through the environment, not the command line.
    MLFLOW_BACKEND_STORE_URI="postgresql+psycopg2://$DB_USER:$(password)@$HOST:$(cat "$RUN/postgres.port")/$DB_NAME" \
        $DETACH "$PY" -m mlflow server --host "$HOST" --port "$port" --workers 1 \
        --serve-artifacts --artifacts-destination "$DIR/artifacts" \
        >"$RUN/mlflow.log" 2>&1 </dev/null 9>&- &
    echo $! >"$RUN/mlflow.pid"
    # The first start creates MLflow's tables in PostgreSQL: allow for it.
    wait_until mlflow 180 answers "$(mlflow_url)/health"
}

start_prefect() {
    local port
    port=$(pick_port "${STOCKCAST_PREFECT_PORT:-4200}")
    echo "$port" >"$RUN/prefect.port"
    mkdir -p "$DIR/prefect"
    log "starting Prefect on $HOST:$port (PREFECT_HOME $DIR/prefect)"
    PREFECT_HOME="$DIR/prefect" PREFECT_SERVER_ANALYTICS_ENABLED=false \
        PREFECT_API_URL="http://$HOST:$port/api" \
        $DETACH "$PY" -m prefect server start --host "$HOST" --port "$port" \
        >"$RUN/prefect.log" 2>&1 </dev/null 9>&- &
    echo $! >"$RUN/prefect.pid"
    wait_until prefect 180 answers "$(prefect_url)/health"
}

stop() {  # name signal
    if alive "$1"; then
        local pid
        pid=$(cat "$RUN/$1.pid")
        log "stopping $1 (pid $pid)"
        if [[ "$1" == postgres ]]; then
            kill -"$2" "$pid" 2>/dev/null || true  # the postmaster stops its backends itself
        else
            kill -"$2" -- "-$pid" 2>/dev/null || kill -"$2" "$pid" 2>/dev/null || true
        fi
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 -- "-$pid" 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$RUN/$1.pid" "$RUN/$1.port"
}

print_env() {
    local any=0
    if alive mlflow; then echo "export MLFLOW_TRACKING_URI=$(mlflow_url)"; any=1; fi
    if alive prefect; then echo "export PREFECT_API_URL=$(prefect_url)"; any=1; fi
    ((any)) || die "no server is running: run \`$0 up\`"
}

with_lock() {  # serialise concurrent `up`/`down` (e.g. parallel test sessions)
    mkdir -p "$RUN"
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$RUN/lock"
        flock 9
    fi
    "$@"
}

up_postgres() {
    if alive postgres && pg_ready; then
        log "PostgreSQL already running on $HOST:$(cat "$RUN/postgres.port")"
    else
        stop postgres INT
        local t0=$SECONDS
        start_postgres
        log "PostgreSQL up in $((SECONDS - t0)) s"
    fi
}

up_mlflow() {
    up_postgres
    if alive mlflow && answers "$(mlflow_url)/health"; then
        log "MLflow already running at $(mlflow_url)"
    else
        stop mlflow TERM
        local t0=$SECONDS
        start_mlflow
        log "MLflow up in $((SECONDS - t0)) s"
    fi
}

up_prefect() {
    if alive prefect && answers "$(prefect_url)/health"; then
        log "Prefect already running at $(prefect_url)"
    else
        stop prefect TERM
        local t0=$SECONDS
        start_prefect
        log "Prefect up in $((SECONDS - t0)) s"
    fi
}

up() {  # [mlflow] [prefect]
    need_python
    local t0=$SECONDS names=("$@")
    ((${#names[@]})) || names=(mlflow prefect)
    mkdir -p "$RUN"
    for name in "${names[@]}"; do
        case "$name" in
            mlflow) up_mlflow ;;
            prefect) up_prefect ;;
            *) die "unknown server $name: use mlflow or prefect" ;;
        esac
    done
    log "up in $((SECONDS - t0)) s"
    print_env
}

down() {
    stop prefect TERM
    stop mlflow TERM
    stop postgres INT  # fast shutdown: ends the sessions, then a clean checkpoint
}

purge() {
    down
    local data
    if [[ -f "$RUN/postgres.datadir" ]]; then
        data=$(cat "$RUN/postgres.datadir")
        log "deleting $data"
        rm -rf "$data"
        rmdir "$(dirname "$data")" 2>/dev/null || true  # <user home>/stockcast, once empty
    fi
    log "deleting $DIR"
    rm -rf "$DIR"
}

status() {
    local ok=0 where
    for name in postgres mlflow prefect; do
        if alive "$name"; then
            case "$name" in
                postgres) where="postgresql://$HOST:$(cat "$RUN/postgres.port")/$DB_NAME, data $(cat "$RUN/postgres.datadir")" ;;
                mlflow) where="$(mlflow_url), artifacts $DIR/artifacts" ;;
                prefect) where="$(prefect_url), PREFECT_HOME $DIR/prefect" ;;
            esac
            log "$name: running, pid $(cat "$RUN/$name.pid"), $where, log $RUN/$name.log"
        else
            log "$name: not running"
            ok=1
        fi
    done
    return $ok
}

case "${1:-}" in
    up) shift; with_lock up "$@" ;;
    down) with_lock down ;;
    purge) with_lock purge ;;
    env) print_env ;;
    status) status ;;
    *) die "usage: $0 up [mlflow] [prefect]|down|purge|env|status" ;;
esac
