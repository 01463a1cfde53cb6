#!/usr/bin/env bash
# Starts what agentpool's tests need on this machine and exports where to find it:
#   AGENTPOOL_TEST_PG_URL  a PostgreSQL superuser URL (tests create their own databases)
# Idempotent: a server already running from an earlier call is reused.
# Usage: source scripts/services.sh   (or run it: it prints the exports)
set -euo pipefail

AP_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
AP_STATE="${AGENTPOOL_TEST_STATE:-/tmp/agentpool-test-$(id -u)}"
AP_PG_PORT="${AGENTPOOL_TEST_PG_PORT:-54329}"
mkdir -p "$AP_STATE"

ap_log() { printf '[services] %s\n' "$*" >&2; }

ap_pg_bin() {
  local d
  for d in /usr/lib/postgresql/15/bin /usr/lib/postgresql/*/bin; do
    [ -x "$d/postgres" ] && { echo "$d"; return 0; }
  done
  return 1
}

ap_install_postgres() {
  if ! ap_pg_bin >/dev/null; then
    ap_log "installing postgresql-15 from Debian"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq postgresql-15 >/dev/null
  fi
}

# postgres refuses to run as root, so as root the cluster belongs to the `postgres` user.
ap_as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

ap_start_postgres() {
  ap_install_postgres
  local bin data sock
  bin="$(ap_pg_bin)"
  data="$AP_STATE/pg"
  sock="$AP_STATE/pgsock"
  mkdir -p "$data" "$sock"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$AP_STATE" "$data" "$sock"; chmod 700 "$data"; fi
  if [ ! -f "$data/PG_VERSION" ]; then
    ap_log "initdb in $data"
    ap_as_pg "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --no-locale >/dev/null
    cat >>"$data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $AP_PG_PORT
unix_socket_directories = '$sock'
max_connections = 400
shared_buffers = 256MB
# Benchmarks write gigabytes of WAL in minutes; at the 1 GB default PostgreSQL forces a
# checkpoint every 15-20 s, and the full-page images after each distort what they measure.
max_wal_size = 4GB
CONF
  fi
  if ! ap_as_pg "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    ap_log "starting PostgreSQL on 127.0.0.1:$AP_PG_PORT"
    ap_as_pg "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 start >/dev/null
  fi
  "$bin/pg_isready" -h 127.0.0.1 -p "$AP_PG_PORT" -t 30 >/dev/null
  export AGENTPOOL_TEST_PG_URL="postgres://postgres@127.0.0.1:$AP_PG_PORT/postgres"
}

ap_start_postgres
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  echo "export AGENTPOOL_TEST_PG_URL=$AGENTPOOL_TEST_PG_URL"
fi
