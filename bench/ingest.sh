#!/usr/bin/env bash
# Worker ingestion benchmark: a dev-mode gateway with its own PostgreSQL, 64 simulated workers
# sending signed heartbeats, then signed proofs, over HTTP on loopback. Prints heartbeats/s and
# proofs/s with p50/p99, closed loop and at a fixed offered rate (HB_RATE heartbeats/s, default
# 3000; PROOF_RATE proofs/s, default 1000). Usage: bench/ingest.sh [workers] [seconds]
#   PROFILE=prefix  also record the gateway's CPU profile of each proof phase (prefix-*.pprof)
#   PGSTAT=1        also print PostgreSQL's own statement timings (pg_stat_statements) at the end
set -euo pipefail
cd "$(dirname "$0")/.."
workers=${1:-64}
secs=${2:-20}
work=$(mktemp -d /tmp/gpugate-ingest.XXXXXX)
chmod 755 "$work"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() { [ -n "${gw:-}" ] && kill "$gw" 2>/dev/null && wait "$gw" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
go build -o "$work/gpugate" .
go build -o "$work/ingest" ./bench/ingest
# Difficulty 8 keeps the load generator's own proof-of-work cheap; the server's verification
# costs the same at any difficulty (one hash, one signature). The down-marking job is off so the
# benchmark's devices stay UP. The per-device and per-user limits and the open-challenge cap are off (proofs are prepared ahead): 64 workers each sending
# ~50 heartbeats/s measure the write path, which a genuine worker (one heartbeat per 30 s) never
# approaches; the limits themselves are tested at their boundaries in the test suite.
serve() {
"$work/gpugate" serve --listen "127.0.0.1:$port" --data-dir "$work/data" --seed 1000 \
  --pow-difficulty 8 --challenge-ttl 5m --heartbeat-timeout 0 --log-level warn \
  --heartbeat-rate off --challenge-rate off --proof-rate off --enrollment-token-rate off --max-open-challenges -1 ${dbg:+--debug-listen "$dbg"} >>"$work/serve.log" 2>&1 &
gw=$!
for _ in $(seq 1 120); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.5; done
}
dbg=
if [ -n "${PROFILE:-}" ]; then
  dbg=127.0.0.1:$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
fi
serve
if [ "${PGSTAT:-}" = 1 ]; then
  # pg_stat_statements must be preloaded: stop the gateway (and its PostgreSQL), add it, start again.
  kill "$gw"; wait "$gw" 2>/dev/null || true
  conf=$(find "$work/data" -name postgresql.auto.conf | head -1)
  printf "shared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.track = all\n" >>"$conf"
  serve
  pgdata=$(dirname "$conf")
  pgsql() { psql -X -q -h "$(sed -n 5p "$pgdata/postmaster.pid")" -p "$(sed -n 4p "$pgdata/postmaster.pid")" -U "${PGUSER:-gpugate}" -d gpugate "$@"; }
  pgsql -c 'CREATE EXTENSION IF NOT EXISTS pg_stat_statements'
fi
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$work/ingest" --server "http://127.0.0.1:$port" --workers "$workers" --duration "${secs}s" --proofs-per-worker 800 \
  --heartbeat-rate "${HB_RATE:-3000}" --proof-rate "${PROOF_RATE:-1000}" --gateway-pid "$gw" \
  ${dbg:+--debug-url "http://$dbg" --profile-out "$PROFILE"}
echo "gateway peak RSS: $(awk '/VmHWM/ {print $2/1024 " MB"}' /proc/$gw/status)"
if [ "${PGSTAT:-}" = 1 ]; then
  echo "PostgreSQL statements by total time (whole run, setup included):"
  pgsql -c "SELECT calls, round(total_exec_time::numeric, 0) AS total_ms, round(mean_exec_time::numeric, 3) AS mean_ms,
    left(regexp_replace(query, '\\s+', ' ', 'g'), 110) AS query FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 15"
fi
