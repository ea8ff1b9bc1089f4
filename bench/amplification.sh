#!/usr/bin/env bash
# bench/amplification.sh: p99 of a cheap query while four worst-case *accepted* documents (the
# most expensive documents the gateway's limits still let through) run concurrently, against a
# freshly seeded gateway with its own PostgreSQL. Target: p99 < 100 ms on 2 cores. One command;
# prints a summary and exits non-zero when the target is missed.
#
# Environment (all optional): AMP_DEVICES (10000) demo devices, AMP_DURATION (20s) per
# measurement, AMP_GATEWAY_FLAGS extra serve flags (e.g. "--max-concurrent 4"), AMP_KEEP=1 keeps
# the work directory. GOMAXPROCS is left to the Go runtime (all cores) unless set.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEVICES=${AMP_DEVICES:-10000}
DURATION=${AMP_DURATION:-20s}
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
command -v curl >/dev/null || die "curl is missing"

WORK=$(mktemp -d /tmp/gpugate-amp.XXXXXX)
chmod 755 "$WORK" # postgres runs as its own OS user when we are root
DATA=$WORK/data
GW_PID=""
cleanup() {
	local rc=$?
	if [ -n "$GW_PID" ] && kill -0 "$GW_PID" 2>/dev/null; then
		kill -TERM "$GW_PID" 2>/dev/null || true
		for _ in $(seq 1 60); do kill -0 "$GW_PID" 2>/dev/null || break; sleep 0.5; done
		kill -KILL "$GW_PID" 2>/dev/null || true
		wait "$GW_PID" 2>/dev/null || true
	fi
	if [ "${AMP_KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "building gpugate, bench/amplification and bench/benchtool"
(cd "$ROOT" && go build -o "$WORK/gpugate" . && go build -o "$WORK/amplification" ./bench/amplification &&
	go build -o "$WORK/benchtool" ./bench/benchtool)

log "seeding $DEVICES devices into a fresh cluster under $DATA"
"$WORK/gpugate" seed --devices "$DEVICES" --data-dir "$DATA" >"$WORK/seed.log" 2>&1 ||
	{ cat "$WORK/seed.log" >&2; die "seed failed"; }

# Production mode (no GraphiQL, no introspection, no demo pulse), no background job, and no
# micro-cache: the worst-case documents repeat, and with the cache on they would measure the cache.
PORT=$("$WORK/benchtool" freeport)
read -r -a EXTRA <<<"${AMP_GATEWAY_FLAGS:-}"
log "starting the gateway on 127.0.0.1:$PORT ${EXTRA[*]:-}"
"$WORK/gpugate" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" --seed 0 --log-level warn \
	--dev=false --heartbeat-timeout 0 --public-cache-ttl 0 "${EXTRA[@]}" >"$WORK/serve.log" 2>&1 &
GW_PID=$!
for i in $(seq 1 240); do
	curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
	kill -0 "$GW_PID" 2>/dev/null || { cat "$WORK/serve.log" >&2; die "the gateway exited"; }
	[ "$i" = 240 ] && die "the gateway is not ready after 120 s"
	sleep 0.5
done

echo "== gpugate amplification load test: $DEVICES devices, $(nproc) cores, $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "== serve flags: --dev=false --heartbeat-timeout 0 --public-cache-ttl 0 ${EXTRA[*]:-}"
echo "== load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
rc=0
"$WORK/amplification" -url "http://127.0.0.1:$PORT/graphql" -pid "$GW_PID" -duration "$DURATION" || rc=$?
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
exit $rc
