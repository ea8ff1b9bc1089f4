#!/usr/bin/env bash
# bench/soak.sh: the soak of docs/soak.md. Builds gpugate and bench/soak, starts a dev-mode
# gateway on a fresh PostgreSQL (zero-config: its own cluster under a scratch data directory) with
# SOAK_SEED demo devices, enrolls SOAK_DEVICES simulated workers (each proved once) under the
# demo users alice and bob, restarts the gateway with the shipped defaults and runs the mixed
# load for DURATION, then prints the report and writes it to $SOAK_OUT/soak.md (samples in
# soak.csv, the gateway's log in soak-serve.log).
#
# Usage: bench/soak.sh [DURATION]     (default 10m; `make soak DURATION=10m`)
#
# Environment (all optional): SOAK_DEVICES (6000 workers), SOAK_READ_RATE (50 explorer reads/s),
# SOAK_WRITE_RATE (0.5 owner writes/s), SOAK_PROVE_EVERY (6h), SOAK_INTERVAL (10s),
# SOAK_WARMUP (a fifth of DURATION, at least 2m), SOAK_SEED (10000 demo devices),
# SOAK_OUT (bench/out), SOAK_KEEP=1 keeps the work directory, SOAK_GATEWAY_FLAGS (extra
# `gpugate serve` flags for the measured gateway).
# Exit status: 0 when the verdict is PASS, 1 otherwise (FAIL, NOT JUDGED, or a setup error).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${1:-${DURATION:-10m}}
DEVICES=${SOAK_DEVICES:-6000}
SEED=${SOAK_SEED:-10000}
OUT=${SOAK_OUT:-$ROOT/bench/out}

log() { printf '[%s] %s\n' "$(date -u +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v curl >/dev/null || die "curl is missing"
command -v python3 >/dev/null || die "python3 is missing (it picks a free port)"
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/gpugate-soak.XXXXXX)
chmod 755 "$WORK" # PostgreSQL runs as its own OS user when we are root
DATA=$WORK/data
GW_PID=""
stop_gateway() {
	if [ -n "$GW_PID" ] && kill -0 "$GW_PID" 2>/dev/null; then
		kill -TERM "$GW_PID" 2>/dev/null || true
		for _ in $(seq 1 60); do kill -0 "$GW_PID" 2>/dev/null || break; sleep 0.5; done
		kill -KILL "$GW_PID" 2>/dev/null || true
		wait "$GW_PID" 2>/dev/null || true
	fi
	GW_PID=""
}
cleanup() {
	local rc=$?
	stop_gateway
	if [ "${SOAK_KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "building gpugate and bench/soak"
# As the Makefile: no pages of go-nvml's deprecation warnings, and the same build cache.
export CGO_CFLAGS=${CGO_CFLAGS:--O2 -g -Wno-deprecated-declarations}
(cd "$ROOT" && go build -o "$WORK/gpugate" . && go build -o "$WORK/soak" ./bench/soak)

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
SERVER=http://127.0.0.1:$PORT
start_gateway() { # log file, extra flags...
	local logf=$1
	shift
	log "starting the gateway: gpugate serve --listen 127.0.0.1:$PORT --data-dir <work>/data $*"
	"$WORK/gpugate" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" "$@" >>"$logf" 2>&1 &
	GW_PID=$!
	for _ in $(seq 1 240); do
		if curl -fsS "$SERVER/readyz" >/dev/null 2>&1; then return 0; fi
		kill -0 "$GW_PID" 2>/dev/null || { tail -20 "$logf" >&2; die "the gateway exited"; }
		sleep 0.5
	done
	die "the gateway is not ready after 120 s"
}

# Setup: the enrollment writes exceed the per-user limits on purpose (one enrollment token per
# worker, SOAK_DEVICES of them from two users), so this gateway runs with those two limits off
# and a cheap proof of work for the first proofs. It is stopped before the measured run.
start_gateway "$WORK/setup.log" --seed "$SEED" --log-level warn --user-write-rate off --enrollment-token-rate off --pow-difficulty 8
log "enrolling $DEVICES workers (each proved once)"
"$WORK/soak" enroll --server "$SERVER" --devices "$DEVICES" --out "$WORK/fleet.json"
stop_gateway

# The measured gateway: dev mode (for the dev issuer's tokens) with every default as shipped
# (write limits, proof-of-work difficulty, heartbeat interval and timeout, micro-cache lifetime)
# but one: the public micro-cache's memory bound, 2 MiB instead of 16. The cache keeps expired
# answers until its LRU evicts them, so with the explorer's many distinct queries it grows by
# about 1 MiB a minute per 20 reads/s until it reaches its bound: with 16 MiB, a 10-minute run
# would measure that fill (bounded) as growth. At 2 MiB it is full within the warm-up and then
# evicts all run long, which is the steady state the soak is after (docs/soak.md, "The verdict").
# SOAK_GATEWAY_FLAGS come last, so they override it (--public-cache-bytes=16777216: as shipped).
GW_FLAGS=(--seed 0 --log-level warn --public-cache-bytes 2097152)
read -r -a EXTRA <<<"${SOAK_GATEWAY_FLAGS:-}"
SERVE_LOG=$OUT/soak-serve.log
: >"$SERVE_LOG"
start_gateway "$SERVE_LOG" "${GW_FLAGS[@]}" "${EXTRA[@]}"
log "soak: $DURATION (interim lines every ${SOAK_INTERVAL:-10s})"
WARMUP=()
[ -n "${SOAK_WARMUP:-}" ] && WARMUP=(--warmup "$SOAK_WARMUP")
set +e
"$WORK/soak" run --server "$SERVER" --fleet "$WORK/fleet.json" --duration "$DURATION" \
	--interval "${SOAK_INTERVAL:-10s}" "${WARMUP[@]}" --read-rate "${SOAK_READ_RATE:-50}" \
	--write-rate "${SOAK_WRITE_RATE:-0.5}" --prove-every "${SOAK_PROVE_EVERY:-6h}" \
	--gateway-pid "$GW_PID" --pg-dsn "host=$DATA/run port=5432 user=gpugate dbname=gpugate sslmode=disable" \
	--out "$OUT/soak.md" --csv "$OUT/soak.csv" \
	--note "gateway: \`gpugate serve --data-dir <fresh> ${GW_FLAGS[*]}${SOAK_GATEWAY_FLAGS:+ $SOAK_GATEWAY_FLAGS}\` (dev mode; shipped defaults but the micro-cache bound, see docs/soak.md) on a database of $SEED demo devices and $DEVICES enrolled workers; commit $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')"
rc=$?
set -e
HWM=$(awk '/VmHWM/ {printf "%.1f MiB", $2/1024}' "/proc/$GW_PID/status" 2>/dev/null || echo '?')
WARN=$(grep -c 'level=WARN' "$SERVE_LOG" || true)
ERR=$(grep -c 'level=ERROR' "$SERVE_LOG" || true)
{
	echo
	echo "- gateway peak RSS (VmHWM): $HWM; its log during the run: $WARN warnings, $ERR errors (\`bench/out/soak-serve.log\`)"
	if [ "$((WARN + ERR))" -gt 0 ]; then
		echo "- distinct log messages (level, msg):"
		grep -E 'level=(WARN|ERROR)' "$SERVE_LOG" | sed -n 's/.*\(level=[A-Z]*\).*\(msg="[^"]*"\|msg=[^ ]*\).*/\1 \2/p' | sort | uniq -c | sort -rn | head -10 | sed 's/^/  - /'
	fi
} | tee -a "$OUT/soak.md"
log "report: $OUT/soak.md, samples: $OUT/soak.csv"
exit $rc
