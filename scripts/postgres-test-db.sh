#!/usr/bin/env bash
# Makes a PostgreSQL test database for the connector's PostgreSQL tests and
# prints its URL (CONFIDANT_TEST_DATABASE_URL) on stdout; the log goes to
# stderr. Installs PostgreSQL from Debian's packages when it is missing,
# creates and starts a cluster when none runs, lets the current user in
# over the Unix socket (peer authentication), and creates a fresh database.
# Needs root (or sudo-less rights to do all that). Usage:
#   export CONFIDANT_TEST_DATABASE_URL="$(./scripts/postgres-test-db.sh)"
set -euo pipefail
log() { echo "postgres-test-db: $*" >&2; }

DATABASE="${CONFIDANT_TEST_DATABASE:-confidant_test}"
SOCKET_DIR=/var/run/postgresql
USER_NAME="$(id -un)"

if ! command -v pg_lsclusters >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    log "installing PostgreSQL from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
fi

# The first cluster; one is created when there is none.
read -r VERSION CLUSTER PORT STATUS _ < <(pg_lsclusters -h | head -n 1) || true
if [ -z "${VERSION:-}" ]; then
    VERSION="$(ls /usr/lib/postgresql | sort -n | tail -n 1)"
    log "creating cluster $VERSION main"
    pg_createcluster "$VERSION" main >&2
    read -r VERSION CLUSTER PORT STATUS _ < <(pg_lsclusters -h | head -n 1)
fi
if [ "$STATUS" != "online" ]; then
    log "starting cluster $VERSION $CLUSTER (port $PORT)"
    pg_ctlcluster "$VERSION" "$CLUSTER" start >&2
fi
for _ in $(seq 1 30); do
    pg_isready -q -h "$SOCKET_DIR" -p "$PORT" && break
    sleep 1
done
pg_isready -q -h "$SOCKET_DIR" -p "$PORT" || { log "PostgreSQL does not answer"; exit 1; }

as_postgres() { if [ "$USER_NAME" = postgres ]; then "$@"; else su postgres -c "$(printf '%q ' "$@")"; fi; }
if [ "$(as_postgres psql -h "$SOCKET_DIR" -p "$PORT" -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$USER_NAME'")" != 1 ]; then
    log "creating role $USER_NAME"
    as_postgres createuser -h "$SOCKET_DIR" -p "$PORT" -s "$USER_NAME" >&2
fi
dropdb -h "$SOCKET_DIR" -p "$PORT" --if-exists "$DATABASE" >&2
createdb -h "$SOCKET_DIR" -p "$PORT" "$DATABASE" >&2
log "database $DATABASE ready (cluster $VERSION $CLUSTER, port $PORT)"
echo "postgres://$USER_NAME@localhost:$PORT/$DATABASE?host=$SOCKET_DIR"
