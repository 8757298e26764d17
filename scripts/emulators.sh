#!/usr/bin/env bash
# Local BigQuery and GCS emulators for the `bigquery` dbt target and the Python warehouse code.
#
#   eval "$(scripts/emulators.sh up)"    install once (cached), start, print the exports
#   scripts/emulators.sh env              print the exports of the running emulators
#   scripts/emulators.sh status           say what runs where (exit 1 if not both up)
#   scripts/emulators.sh down             stop them (their data is in memory: it is lost)
#
# stdout carries only `export VAR=value` lines; progress and errors go to stderr.
#
# BigQuery: bqemulator (REST API over DuckDB + SQLGlot; google-cloud-bigquery and dbt-bigquery
# reach it through BIGQUERY_EMULATOR_HOST / STOCKCAST_BQ_API_ENDPOINT). GCS: gcp-storage-emulator
# (STORAGE_EMULATOR_HOST), bucket STOCKCAST_GCS_BUCKET created on start. Each runs from its own
# virtualenv (python 3.11) under $STOCKCAST_EMULATORS_DIR (default ~/.cache/stockcast/emulators),
# built with uv from PyPI only: nothing else is downloaded, so it works in CI.
#
# Settings (environment): STOCKCAST_EMULATORS_DIR, STOCKCAST_BQ_EMULATOR_PORT (9050),
# STOCKCAST_BQ_EMULATOR_GRPC_PORT (9060), STOCKCAST_GCS_EMULATOR_PORT (9023),
# STOCKCAST_BQ_PROJECT (stockcast-local), STOCKCAST_GCS_BUCKET (stockcast-uploads).
# A port already taken by another program is replaced by a free one.
#
# Clients of load jobs must send application/octet-stream (bqemulator rejects the multipart
# type google-cloud-bigquery sends); ml/warehouse/bigquery_engine.py does this for its client.
set -euo pipefail

DIR="${STOCKCAST_EMULATORS_DIR:-$HOME/.cache/stockcast/emulators}"
RUN="$DIR/run"
HOST=127.0.0.1
PROJECT="${STOCKCAST_BQ_PROJECT:-stockcast-local}"
BUCKET="${STOCKCAST_GCS_BUCKET:-stockcast-uploads}"
PYTHON_VERSION=3.11
# Pinned: the emulator's SQL fidelity changes between releases (tests/test_bigquery_dbt.py
# documents the gaps of these versions). duckdb must match the spatial extension wheel.
# sqlglotc is the compiled build of the emulator's sqlglot (same version): the emulator parses
# each query many times, and it halves the time of big queries (dbt unit tests).
BQ_PACKAGES=(bqemulator==1.4.0 sqlglot==30.11.0 sqlglotc==30.11.0 duckdb==1.5.5
    duckdb-extension-spatial==1.5.5 numpy==2.4.6 pandas==3.1.1)
GCS_PACKAGES=(gcp-storage-emulator==2026.7.19)

log() { echo "emulators: $*" >&2; }
die() { log "$*"; exit 1; }

if command -v uv >/dev/null 2>&1; then UV=(uv); else UV=(python3 -m uv); fi
# Emulators run in a session of their own: a Ctrl-C or a kill of the caller's process group
# (e.g. a test runner) does not stop them; `down` does.
if command -v setsid >/dev/null 2>&1; then DETACH="setsid nohup"; else DETACH=nohup; fi

# -- install ----------------------------------------------------------------------------------
ensure_venv() {  # name packages...
    local name="$1"; shift
    local venv="$DIR/venv-$name" stamp="$DIR/venv-$name/.stockcast-packages" want="$*"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return 0
    fi
    log "installing $name emulator into $venv ($want)"
    rm -rf "$venv"
    "${UV[@]}" venv --quiet --python "$PYTHON_VERSION" --python-preference system "$venv" >&2
    VIRTUAL_ENV="$venv" "${UV[@]}" pip install --quiet --python "$venv/bin/python" "$@" >&2
    echo "$want" >"$stamp"
}

install_all() {
    mkdir -p "$DIR" "$RUN"
    ensure_venv bigquery "${BQ_PACKAGES[@]}"
    ensure_venv gcs "${GCS_PACKAGES[@]}"
    # bqemulator's DuckDB loads the spatial extension from ~/.duckdb/extensions and would try to
    # download it: give it a HOME of its own holding the copy shipped in the PyPI wheel.
    local ext_src ext_dir="$DIR/home/.duckdb/extensions/v1.5.5/linux_amd64"
    ext_src=$(find "$DIR/venv-bigquery" -path '*duckdb_extension_spatial/extensions/v1.5.5/spatial.duckdb_extension' | head -n 1)
    [[ -n "$ext_src" ]] || die "spatial extension not found in the duckdb-extension-spatial wheel"
    if [[ ! -f "$ext_dir/spatial.duckdb_extension" ]]; then
        mkdir -p "$ext_dir"
        cp "$ext_src" "$ext_dir/"
    fi
}

# -- processes --------------------------------------------------------------------------------
alive() { [[ -f "$RUN/$1.pid" ]] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

port_free() {
    "$DIR/venv-gcs/bin/python" - "$1" <<'EOF'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
EOF
}

free_port() {
    "$DIR/venv-gcs/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

pick_port() {  # preferred
    if port_free "$1"; then echo "$1"; else free_port; fi
}

answers() {  # url
    "$DIR/venv-gcs/bin/python" - "$1" <<'EOF'
import sys, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=2).read()
except Exception:
    sys.exit(1)
EOF
}

wait_for() {  # name url seconds
    local deadline=$((SECONDS + $3))
    until answers "$2"; do
        if ! alive "$1"; then
            tail -n 20 "$RUN/$1.log" >&2 || true
            die "$1 emulator exited during start (log: $RUN/$1.log)"
        fi
        ((SECONDS < deadline)) || die "$1 emulator did not answer at $2 within $3 s (log: $RUN/$1.log)"
        sleep 0.3
    done
}

bq_url() { echo "http://$HOST:$(cat "$RUN/bigquery.port")"; }
gcs_url() { echo "http://$HOST:$(cat "$RUN/gcs.port")"; }

start_bigquery() {
    local port grpc
    port=$(pick_port "${STOCKCAST_BQ_EMULATOR_PORT:-9050}")
    grpc=$(pick_port "${STOCKCAST_BQ_EMULATOR_GRPC_PORT:-9060}")
    echo "$port" >"$RUN/bigquery.port"
    log "starting BigQuery emulator on $HOST:$port (gRPC $grpc)"
    HOME="$DIR/home" $DETACH "$DIR/venv-bigquery/bin/bqemulator" start \
        --rest-host "$HOST" --rest-port "$port" --grpc-host "$HOST" --grpc-port "$grpc" \
        --ephemeral --project "$PROJECT" --log-format console --log-level warning \
        >"$RUN/bigquery.log" 2>&1 </dev/null 9>&- &
    echo $! >"$RUN/bigquery.pid"
    wait_for bigquery "$(bq_url)/bigquery/v2/projects/$PROJECT/datasets" 90
}

start_gcs() {
    local port
    port=$(pick_port "${STOCKCAST_GCS_EMULATOR_PORT:-9023}")
    echo "$port" >"$RUN/gcs.port"
    log "starting GCS emulator on $HOST:$port (bucket $BUCKET)"
    # `cd` in a subshell (the emulator writes into its working directory); `&` on the command
    # alone, so $! is the emulator and no shell lingers holding stdout or the lock.
    (
        cd "$RUN"
        $DETACH "$DIR/venv-gcs/bin/gcp-storage-emulator" start --host "$HOST" \
            --port "$port" --in-memory --default-bucket "$BUCKET" \
            >"$RUN/gcs.log" 2>&1 </dev/null 9>&- &
        echo $! >"$RUN/gcs.pid"
    )
    wait_for gcs "$(gcs_url)/storage/v1/b/$BUCKET" 30
}

stop() {  # name
    if alive "$1"; then
        local pid
        pid=$(cat "$RUN/$1.pid")
        log "stopping $1 emulator (pid $pid)"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$RUN/$1.pid" "$RUN/$1.port"
}

print_env() {
    alive bigquery && alive gcs || die "emulators are not running: run \`$0 up\`"
    local bq gcs
    bq=$(bq_url)
    gcs=$(gcs_url)
    cat <<EOF
export BIGQUERY_EMULATOR_HOST=$bq
export STORAGE_EMULATOR_HOST=$gcs
export STOCKCAST_TARGET=bigquery
export STOCKCAST_BQ_PROJECT=$PROJECT
export STOCKCAST_BQ_METHOD=oauth-secrets
export STOCKCAST_BQ_TOKEN=emulator
export STOCKCAST_BQ_API_ENDPOINT=$bq
export STOCKCAST_GCS_BUCKET=$BUCKET
EOF
}

with_lock() {  # serialise concurrent `up`/`down` (e.g. parallel test sessions)
    mkdir -p "$RUN"
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$RUN/lock"
        flock 9
    fi
    "$@"
}

up() {
    local t0=$SECONDS
    install_all
    if alive bigquery && answers "$(bq_url)/bigquery/v2/projects/$PROJECT/datasets"; then
        log "BigQuery emulator already running at $(bq_url)"
    else
        stop bigquery
        start_bigquery
    fi
    if alive gcs && answers "$(gcs_url)/storage/v1/b/$BUCKET"; then
        log "GCS emulator already running at $(gcs_url)"
    else
        stop gcs
        start_gcs
    fi
    log "up in $((SECONDS - t0)) s"
    print_env
}

down() {
    stop bigquery
    stop gcs
}

status() {
    local ok=0
    for name in bigquery gcs; do
        if alive "$name"; then
            log "$name: running, pid $(cat "$RUN/$name.pid"), http://$HOST:$(cat "$RUN/$name.port"), log $RUN/$name.log"
        else
            log "$name: not running"
            ok=1
        fi
    done
    return $ok
}

case "${1:-}" in
    up) with_lock up ;;
    down) with_lock down ;;
    env) print_env ;;
    status) status ;;
    *) die "usage: $0 up|down|env|status" ;;
esac
