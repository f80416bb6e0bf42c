#!/usr/bin/env bash
# A throwaway PostgreSQL on loopback for the test suite: `pg_test.sh start DIR PORT` / `stop DIR`.
# `pause DIR` stops the server and keeps its data; `resume DIR PORT` starts it again on that data
# (the topology test's database outage).
# Runs the server as the `postgres` system user when invoked as root (PostgreSQL refuses root).
# The suite's server trades durability for speed (fsync, synchronous_commit and full_page_writes off);
# PG_TEST_DURABLE=1 keeps PostgreSQL's normal durability, for benchmarks that compare with servers that
# fsync (benchmarks/compare_orthanc.py).
set -euo pipefail
action=$1
dir=$2
port=${3:-54329}
dir=$(realpath -m "$dir")
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$bindir" ] || { echo "PostgreSQL server binaries not found (apt-get install postgresql)" >&2; exit 1; }

as_owner() {
  # From /, so that the server user never needs access to the caller's working directory.
  if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

start_server() {
  local durability="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  if [ "${PG_TEST_DURABLE:-0}" = 1 ]; then durability=""; fi
  as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir $durability -c max_connections=100" \
    start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
}

case "$action" in
  start)
    rm -rf "$dir"
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
    as_owner "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    start_server
    echo "PostgreSQL listening on 127.0.0.1:$port (data in $dir)"
    ;;
  pause)
    as_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    ;;
  resume)
    start_server
    ;;
  stop)
    if [ -d "$dir/data" ]; then
      as_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    ;;
  *)
    echo "usage: $0 start|stop|pause|resume DIR [PORT]" >&2
    exit 2
    ;;
esac
