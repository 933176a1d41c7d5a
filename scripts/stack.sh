#!/usr/bin/env bash
# The production shape on one machine, every part on 127.0.0.1 and its own process, with a log and a PID file in
# $STACK_DIR (default ./.stack):
#   postgres         PostgreSQL (initdb/pg_ctl, data in a private temporary folder, run as a non-root user)
#   prefect-server   Prefect's API and UI on that database
#   prefect-worker-1/2  process workers of the work pool diffpir-process
#   seaweedfs        an S3 server (SeaweedFS) with the bucket diffpir, enforcing generated credentials
#   dask-scheduler, dask-worker-1/2   a Dask cluster (workers without nannies: one process each)
# Usage: scripts/stack.sh up|down|status (`up` starts whatever part is not up). Ports: STACK_PG_PORT (55432),
# STACK_PREFECT_PORT (4200), STACK_S3_PORT (8333), STACK_DASK_PORT (8786); STACK_WORKER_LIMIT: flow runs per worker (1).
# `up` writes $STACK_DIR/env (PREFECT_API_URL, S3 endpoint, Dask address; source it) and $STACK_DIR/s3.env (the S3
# credentials, mode 600), and saves them as the Prefect Secret block diffpir-s3: deployment runs name it
# (credentials_block), so no credential is ever a run parameter. The Prefect workers do not hold the credentials; the
# Dask workers do (tasks on an existing cluster read storage with their own environment).
set -euo pipefail
cmd="${1:-status}"
venv="${VENV:-.venv}"
venv="$(cd "$venv" && pwd)"
dir="${STACK_DIR:-$PWD/.stack}"
mkdir -p "$dir/logs" "$dir/pids"
dir="$(cd "$dir" && pwd)"
pg_port="${STACK_PG_PORT:-55432}"
prefect_port="${STACK_PREFECT_PORT:-4200}"
s3_port="${STACK_S3_PORT:-8333}"
dask_port="${STACK_DASK_PORT:-8786}"
api="http://127.0.0.1:$prefect_port/api"
services=(dask-worker-2 dask-worker-1 dask-scheduler prefect-worker-2 prefect-worker-1 seaweedfs prefect-server postgres)

alive() { [ -f "$dir/pids/$1.pid" ] && kill -0 "$(cat "$dir/pids/$1.pid")" 2>/dev/null; }

# start NAME ENV... -- COMMAND...: unless NAME is up, a new session (its own process group), output to logs/NAME.log,
# PID to pids/NAME.pid
start() {
    local name="$1"; shift
    if alive "$name"; then return; fi
    local envs=()
    while [ "$1" != "--" ]; do envs+=("$1"); shift; done
    shift
    env "${envs[@]}" setsid "$@" >>"$dir/logs/$name.log" 2>&1 < /dev/null &
    echo $! >"$dir/pids/$name.pid"
}

wait_for() {  # wait_for WHAT SECONDS COMMAND...
    local what="$1" limit="$2"; shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            echo "stack: $what did not come up within ${limit}s; see $dir/logs/" >&2
            exit 1
        fi
        sleep 0.5
    done
}

pg_bin() {
    for candidate in "${PG_BIN:-}" /usr/lib/postgresql/*/bin; do
        if [ -n "$candidate" ] && [ -x "$candidate/pg_ctl" ]; then echo "$candidate"; return; fi
    done
    if command -v pg_ctl >/dev/null && command -v initdb >/dev/null; then dirname "$(command -v pg_ctl)"; return; fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "stack: installing PostgreSQL (apt-get install postgresql)" >&2
        apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
        pg_bin
        return
    fi
    echo "stack: PostgreSQL is not installed and cannot be installed here: run 'sudo apt-get install postgresql'" \
        "(or set PG_BIN to the folder holding initdb and pg_ctl)" >&2
    exit 1
}

as_pg() {  # run as the database's user: never root (PostgreSQL refuses it)
    if [ "$(id -u)" = 0 ]; then runuser -u "$pg_user" -- "$@"; else "$@"; fi
}

up_postgres() {
    if alive postgres; then return; fi
    local bin; bin="$(pg_bin)"
    pg_user="$(id -un)"
    if [ "$(id -u)" = 0 ]; then pg_user="$(getent passwd postgres >/dev/null && echo postgres || echo nobody)"; fi
    local data
    if [ -f "$dir/postgres.data" ]; then data="$(cat "$dir/postgres.data")"; else
        data="$(mktemp -d /tmp/diffpir-stack-pg.XXXXXX)"  # a folder the database user can reach whatever $dir is
        echo "$data" >"$dir/postgres.data"
        chown "$pg_user" "$data"
        as_pg "$bin/initdb" -D "$data/db" -A trust -U postgres --no-sync >"$dir/logs/postgres-initdb.log" 2>&1
    fi
    as_pg "$bin/pg_ctl" -D "$data/db" -l "$data/server.log" -w -o "-h 127.0.0.1 -p $pg_port -k $data" start >/dev/null
    ln -sf "$data/server.log" "$dir/logs/postgres.log"
    head -1 "$data/db/postmaster.pid" >"$dir/pids/postgres.pid"
    echo "$bin" >"$dir/postgres.bin"
    if ! "$bin/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -tAc "select 1 from pg_database where datname='prefect'" | grep -q 1; then
        "$bin/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres prefect
    fi
}

up() {  # starts every part that is not up: after a crash, `up` again restarts what is missing
    "$venv/bin/python" -c "import diffpir_flow.cli.seaweed as s; s.weed_binary()"  # says what to install if weed is missing
    up_postgres
    if [ ! -f "$dir/s3.env" ]; then
        (umask 077; printf 'AWS_ACCESS_KEY_ID=stack-%s\nAWS_SECRET_ACCESS_KEY=%s\n' \
            "$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')" "$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$dir/s3.env")
    fi
    mapfile -t s3_env <"$dir/s3.env"
    local common=(PREFECT_API_URL="$api" PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_SERVER_ALLOW_EPHEMERAL_MODE=false
        PREFECT_HOME="$dir/prefect-home" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}")
    start prefect-server "${common[@]}" \
        PREFECT_API_DATABASE_CONNECTION_URL="postgresql+asyncpg://postgres@127.0.0.1:$pg_port/prefect" -- \
        "$venv/bin/prefect" server start --host 127.0.0.1 --port "$prefect_port"
    start seaweedfs "${s3_env[@]}" -- "$venv/bin/python" -m diffpir_flow.cli.seaweed "$dir/seaweedfs" --s3-port "$s3_port" --bucket diffpir
    start dask-scheduler "${common[@]}" -- "$venv/bin/dask" scheduler --host 127.0.0.1 --port "$dask_port" --no-dashboard
    for i in 1 2; do
        start "dask-worker-$i" "${common[@]}" "${s3_env[@]}" -- "$venv/bin/dask" worker "tcp://127.0.0.1:$dask_port" \
            --host 127.0.0.1 --nthreads 1 --no-nanny --no-dashboard --name "stack-dask-$i"
    done
    wait_for "the Prefect server ($api)" 120 curl -sf "$api/health"
    env "${common[@]}" "${s3_env[@]}" "$venv/bin/python" - <<'EOF'
import os
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate

Secret(value={"key": os.environ["AWS_ACCESS_KEY_ID"], "secret": os.environ["AWS_SECRET_ACCESS_KEY"]}).save("diffpir-s3", overwrite=True)
with get_client(sync_client=True) as client:
    if "diffpir-process" not in {pool.name for pool in client.read_work_pools()}:
        client.create_work_pool(WorkPoolCreate(name="diffpir-process", type="process"))
EOF
    for i in 1 2; do
        start "prefect-worker-$i" "${common[@]}" PYTHONUNBUFFERED=1 -- "$venv/bin/prefect" worker start --pool diffpir-process \
            --limit "${STACK_WORKER_LIMIT:-1}" --name "stack-worker-$i" --type process
    done
    wait_for "SeaweedFS (http://127.0.0.1:$s3_port)" 60 curl -s -o /dev/null "http://127.0.0.1:$s3_port/"
    wait_for "two Dask workers (tcp://127.0.0.1:$dask_port)" 60 "$venv/bin/python" -c "
from distributed import Client
with Client('tcp://127.0.0.1:$dask_port', timeout=5) as c: assert len(c.scheduler_info()['workers']) == 2"
    cat >"$dir/env" <<EOF
PREFECT_API_URL=$api
DIFFPIR_S3_ENDPOINT=http://127.0.0.1:$s3_port
DIFFPIR_DASK_ADDRESS=tcp://127.0.0.1:$dask_port
EOF
    status
    echo "UI: http://127.0.0.1:$prefect_port   S3: http://127.0.0.1:$s3_port (bucket diffpir; credentials: $dir/s3.env," \
        "Secret block diffpir-s3)   Dask: tcp://127.0.0.1:$dask_port"
    echo "set -a; . $dir/env; set +a   # then: prefect --no-prompt deploy -n local (deployments/README.md)"
}

down() {  # SIGINT to the Python parts (they act on it at once), SIGTERM to the others; SIGKILL after 10 s
    local stopping=()
    for name in "${services[@]}"; do
        [ -f "$dir/pids/$name.pid" ] || continue
        pid="$(cat "$dir/pids/$name.pid")"
        if [ "$name" = postgres ] && [ -f "$dir/postgres.data" ]; then
            pg_user="$(stat -c %U "$(cat "$dir/postgres.data")")"
            as_pg "$(cat "$dir/postgres.bin")/pg_ctl" -D "$(cat "$dir/postgres.data")/db" -m fast -w stop >/dev/null 2>&1 || true
        elif kill -0 "$pid" 2>/dev/null; then
            signal=INT
            [ "$name" = seaweedfs ] && signal=TERM
            kill "-$signal" -- "-$pid" 2>/dev/null || kill "-$signal" "$pid" 2>/dev/null || true  # its own process group only
            stopping+=("$name")
        fi
    done
    local deadline=$((SECONDS + 10))
    for name in "${stopping[@]}"; do
        pid="$(cat "$dir/pids/$name.pid")"
        while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then
            echo "stack: $name (pid $pid) did not stop within 10 s: killed" >&2
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    rm -f "$dir"/pids/*.pid
    echo "stack: down ($dir)"
}

status() {
    for name in postgres prefect-server prefect-worker-1 prefect-worker-2 seaweedfs dask-scheduler dask-worker-1 dask-worker-2; do
        if alive "$name"; then state="up   pid $(cat "$dir/pids/$name.pid")"; else state="down"; fi
        printf '%-17s %s\n' "$name" "$state"
    done
}

case "$cmd" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: scripts/stack.sh up|down|status" >&2; exit 2 ;;
esac
