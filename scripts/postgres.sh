#!/usr/bin/env bash
# Starts (or reuses) a local PostgreSQL 15 server for the custodian store tests and prints the
# URL of a database on it (only the URL goes to stdout; progress goes to stderr):
#
#   export RENKETSU_TEST_PG_URL="$(./scripts/postgres.sh)"
#
# - Server binaries: ${RENKETSU_PG_BIN:-/usr/lib/postgresql/15/bin} (Debian's postgresql-15;
#   installed with apt-get when missing and we are root).
# - Data directory: ${RENKETSU_PG_DIR:-$HOME/.cache/renketsu/pg}, created with initdb on first
#   use. When run as root the server runs as the `postgres` user (PostgreSQL refuses to run as
#   root); if that user cannot reach $HOME (e.g. /root is mode 0700) the default moves to
#   /var/tmp/renketsu-pg-$USER and a notice says so.
# - Listens on 127.0.0.1:${RENKETSU_PG_PORT:-54329} and on a unix socket in the data
#   directory. Authentication is `trust` for local connections: a test server, never a
#   production one.
# - Idempotent: a server already running on that data directory is reused; concurrent calls
#   are serialised with a lock file.
# - Creates the database ${RENKETSU_PG_DB:-renketsu_test} if missing. The store tests create
#   one fresh database per test next to it and drop it when the test passes.
set -euo pipefail

PG_BIN="${RENKETSU_PG_BIN:-/usr/lib/postgresql/15/bin}"
PORT="${RENKETSU_PG_PORT:-54329}"
DB="${RENKETSU_PG_DB:-renketsu_test}"
SUPERUSER=postgres

log() { echo "postgres.sh: $*" >&2; }

if [[ ! -x "$PG_BIN/postgres" ]]; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        log "installing postgresql-15 with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y --no-install-recommends postgresql-15 >&2 ||
            { apt-get update >&2 && apt-get install -y --no-install-recommends postgresql-15 >&2; }
    fi
    [[ -x "$PG_BIN/postgres" ]] || {
        log "no PostgreSQL server at $PG_BIN (install Debian's postgresql-15 or set RENKETSU_PG_BIN)"
        exit 1
    }
fi

# Who runs the server: ourselves, or `postgres` when we are root.
as_server() { "$@"; }
if [[ $(id -u) -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/sh postgres
    as_server() { runuser -u postgres -- "$@"; }
fi

DEFAULT_DIR="$HOME/.cache/renketsu/pg"
if [[ -z "${RENKETSU_PG_DIR:-}" && $(id -u) -eq 0 ]] &&
    ! runuser -u postgres -- test -x "$HOME"; then
    DEFAULT_DIR="/var/tmp/renketsu-pg-$(id -un)"
    log "notice: user postgres cannot enter $HOME; using $DEFAULT_DIR (set RENKETSU_PG_DIR to choose)"
fi
DATA="${RENKETSU_PG_DIR:-$DEFAULT_DIR}"

mkdir -p "$(dirname "$DATA")"
LOCK="$(dirname "$DATA")/.$(basename "$DATA").lock"
exec 9>"$LOCK"
flock 9

if [[ ! -f "$DATA/PG_VERSION" ]]; then
    log "initdb in $DATA"
    mkdir -p "$DATA"
    chmod 0700 "$DATA"
    [[ $(id -u) -eq 0 ]] && chown postgres: "$DATA"
    as_server "$PG_BIN/initdb" -D "$DATA" -U "$SUPERUSER" -A trust -E UTF8 --locale=C >&2 9>&-
fi

if as_server "$PG_BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    log "reusing the server running on $DATA"
else
    log "starting PostgreSQL on 127.0.0.1:$PORT (data $DATA, log $DATA/server.log)"
    as_server "$PG_BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t 60 \
        -o "-p $PORT -k $DATA -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=on" \
        start >&2 9>&- || {
        log "the server did not start; last lines of $DATA/server.log:"
        tail -n 20 "$DATA/server.log" >&2 || true
        exit 1
    }
fi

PSQL=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U "$SUPERUSER" -d postgres)
exists="$("${PSQL[@]}" -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'")"
if [[ "$exists" != 1 ]]; then
    "${PSQL[@]}" -c "CREATE DATABASE \"$DB\"" >&2
    log "created database $DB"
fi

echo "postgres://$SUPERUSER@127.0.0.1:$PORT/$DB"
