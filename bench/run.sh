#!/usr/bin/env bash
# bench/run.sh: seed a fresh database with 1,000,000 devices, then measure, on that database,
# the gateway over HTTP (wrk) next to pgbench running the gateway's own SQL. See bench/README.md.
#
# Environment (all optional): BENCH_DEVICES (1000000), BENCH_DURATION seconds per measurement
# (20), BENCH_WARMUP seconds (3), BENCH_CONNS (16), BENCH_THREADS (2), BENCH_PAGES (1000: the
# deep page), BENCH_GATEWAY_FLAGS (replaces the default extra serve flags, see below),
# BENCH_KEEP=1 keeps the work directory, BENCH_OUT (bench/out).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEVICES=${BENCH_DEVICES:-1000000}
DURATION=${BENCH_DURATION:-20}
WARMUP=${BENCH_WARMUP:-3}
CONNS=${BENCH_CONNS:-16}
THREADS=${BENCH_THREADS:-2}
PAGES=${BENCH_PAGES:-1000}
FIRST=50
OUT=${BENCH_OUT:-$ROOT/bench/out}
SEED_LIMIT=60

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- tools ---------------------------------------------------------------------------------
if ! command -v wrk >/dev/null; then
	[ "$(id -u)" = 0 ] || die "wrk is missing: sudo apt-get install -y wrk"
	log "installing wrk"
	DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >/dev/null ||
		{ apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >/dev/null; }
fi
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$PGBIN" ] && [ -x "$PGBIN/pgbench" ] || die "pgbench not found in /usr/lib/postgresql/*/bin"
PGBENCH=$PGBIN/pgbench
PSQL=$PGBIN/psql
[ -x "$PSQL" ] || PSQL=$(command -v psql) || die "psql not found"
command -v curl >/dev/null || die "curl is missing"

# --- work directory, cleanup -----------------------------------------------------------------
WORK=$(mktemp -d /tmp/gpugate-bench.XXXXXX)
chmod 755 "$WORK" # postgres runs as its own OS user when we are root
DATA=$WORK/data
mkdir -p "$OUT" "$WORK/pgbench" "$WORK/raw"
rm -f "$OUT"/{top,wrk,pgbench}-*.txt "$OUT"/{seed,serve}.log "$OUT"/{results.md,explain.txt,gateway-list.sql}
GW_PID=""
SAMPLER_PID=""
stop_sampler() {
	if [ -n "$SAMPLER_PID" ]; then
		kill "$SAMPLER_PID" 2>/dev/null || true
		wait "$SAMPLER_PID" 2>/dev/null || true
		SAMPLER_PID=""
	fi
}
stop_gateway() {
	if [ -n "$GW_PID" ] && kill -0 "$GW_PID" 2>/dev/null; then
		log "stopping the gateway (SIGTERM)"
		kill -TERM "$GW_PID" 2>/dev/null || true
		for _ in $(seq 1 60); do kill -0 "$GW_PID" 2>/dev/null || break; sleep 0.5; done
		kill -KILL "$GW_PID" 2>/dev/null || true
		wait "$GW_PID" 2>/dev/null || true
	fi
	GW_PID=""
}
cleanup() {
	local rc=$?
	stop_sampler
	stop_gateway
	if [ "${BENCH_KEEP:-0}" = 1 ]; then
		log "kept $WORK"
	else
		rm -rf "$WORK"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1. build and seed -------------------------------------------------------------------------
log "building gpugate and bench/benchtool"
(cd "$ROOT" && go build -o "$WORK/gpugate" . && go build -o "$WORK/benchtool" ./bench/benchtool)
BIN=$WORK/gpugate
TOOL=$WORK/benchtool

log "seeding $DEVICES devices into a fresh cluster under $DATA"
t0=$(date +%s.%N)
"$BIN" seed --devices "$DEVICES" --data-dir "$DATA" >"$WORK/raw/seed.log" 2>&1 ||
	{ cat "$WORK/raw/seed.log" >&2; die "seed failed"; }
t1=$(date +%s.%N)
SEED_WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
# The seed transaction alone, as gpugate reports it ("seed: N devices loaded in 41.2s").
SEED_TX=$(sed -n 's/^seed: .* loaded in \(.*\)$/\1/p' "$WORK/raw/seed.log")
log "seed: $SEED_TX in the seed transaction, ${SEED_WALL}s for the whole command (initdb, start, migrate, seed, stop)"

# --- 2. serve ----------------------------------------------------------------------------------
# The gateway's background writers are switched off: at this size each of their runs rewrites
# most of the devices table (see docs/benchmark.md), which is not what is measured here.
# --dev=false: no demo fleet pulse (dev mode's stand-in heartbeats for every UP demo device);
# --heartbeat-timeout 0: no job marking silent devices DOWN (it would take the whole UP fleet down,
# and with it the filter being measured, two minutes after the seed).
# BENCH_GATEWAY_FLAGS replaces these.
SERVE_HELP=$("$BIN" serve --help 2>&1 || true)
if [ -n "${BENCH_GATEWAY_FLAGS+x}" ]; then
	read -r -a GW_FLAGS <<<"$BENCH_GATEWAY_FLAGS"
else
	GW_FLAGS=()
	grep -q -- '-dev$' <<<"$SERVE_HELP" && GW_FLAGS+=(--dev=false)
	grep -q -- '-heartbeat-timeout ' <<<"$SERVE_HELP" && GW_FLAGS+=(--heartbeat-timeout 0)
fi
# The gateway answers identical anonymous queries from a short micro-cache (--public-cache-ttl,
# default 1 s): with it, a load generator repeating one query measures the cache. Both are
# measured: as shipped, then with the cache off, which is the gateway running the queries.
HAS_CACHE=0
grep -q -- '-public-cache-ttl ' <<<"$SERVE_HELP" && HAS_CACHE=1

PORT=$("$TOOL" freeport)
URL=http://127.0.0.1:$PORT/graphql
start_gateway() { # extra flags...
	log "starting the gateway on 127.0.0.1:$PORT ${GW_FLAGS[*]} $*"
	"$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" --seed 0 --log-level warn "${GW_FLAGS[@]}" "$@" \
		>>"$WORK/raw/serve.log" 2>&1 &
	GW_PID=$!
	local i
	for i in $(seq 1 240); do
		if curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; then return 0; fi
		kill -0 "$GW_PID" 2>/dev/null || { cat "$WORK/raw/serve.log" >&2; die "the gateway exited"; }
		sleep 0.5
	done
	die "the gateway is not ready after 120 s"
}
start_gateway
SOCK=$DATA/run
[ -S "$SOCK/.s.PGSQL.5432" ] || die "no PostgreSQL socket in $SOCK"
psql_q() { "$PSQL" -h "$SOCK" -U gpugate -X -q -At -v ON_ERROR_STOP=1 gpugate "$@"; }

# A freshly loaded table gets autovacuumed (insert threshold) at the first chance, i.e. during the
# measurements; vacuum now instead, as a steady-state database would be (visibility map, hint bits).
log "VACUUM (ANALYZE) devices, gpus"
t0=$(date +%s.%N)
psql_q -c "VACUUM (ANALYZE) devices, gpus"
VACUUM_S=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
log "vacuumed in ${VACUUM_S}s"

# --- 3. ids and the deep cursor ------------------------------------------------------------------
psql_q -c "SELECT id FROM devices TABLESAMPLE BERNOULLI (0.2) REPEATABLE (42) LIMIT 1000" >"$WORK/ids.txt"
NIDS=$(wc -l <"$WORK/ids.txt")
[ "$NIDS" -ge 128 ] || die "sampled only $NIDS device ids"

FIELDS='id name status region verification gpuModel gpuCount lastSeenAt createdAt'
LIST_Q="query(\$after: String) { devices(first: $FIRST, after: \$after, filter: {status: UP}) { edges { node { $FIELDS } } pageInfo { hasNextPage endCursor } } }"
log "walking to page $PAGES of devices(first: $FIRST, filter: {status: UP})"
WALK_OUT=$("$TOOL" walk -url "$URL" -pages "$PAGES" -query "$LIST_Q") || die "the walk to page $PAGES failed"
read -r CURSOR WALK_S <<<"$WALK_OUT"
log "page $PAGES cursor found: $((PAGES - 1)) requests in ${WALK_S}s"

json_str() { printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g'; }
printf '{"query":"%s","variables":{"after":null}}' "$(json_str "$LIST_Q")" >"$WORK/list_page1.json"
printf '{"query":"%s","variables":{"after":"%s"}}' "$(json_str "$LIST_Q")" "$CURSOR" >"$WORK/list_deep.json"
printf '{"query":"%s","variables":{"id":"%%ID%%"}}' \
	"$(json_str "query(\$id: ID!) { device(id: \$id) { $FIELDS } }")" >"$WORK/device.json"

# Each body must answer without errors, with the rows it asks for.
check() { # name body expected-ids
	local out n
	out=$(curl -fsS -XPOST -H 'Content-Type: application/json' --data-binary "$2" "$URL") || die "$1: request failed"
	case $out in *'"errors"'*) die "$1: $out" ;; esac
	n=$(printf '%s' "$out" | grep -o '"id":' | wc -l)
	[ "$n" = "$3" ] || die "$1: expected $3 devices, got $n: ${out:0:300}"
}
check list_page1 "$(cat "$WORK/list_page1.json")" "$FIRST"
check list_deep "$(cat "$WORK/list_deep.json")" "$FIRST"
check device "$(sed "s/%ID%/$(head -1 "$WORK/ids.txt")/" "$WORK/device.json")" 1

# pgbench scripts with the gateway's own SQL, and EXPLAIN of each for the record.
"$TOOL" pgbench -db "$ROOT/db" -out "$WORK/pgbench" -status UP -first "$FIRST" -cursor "$CURSOR" \
	-ids "$WORK/ids.txt" -nids 128
cp "$WORK/pgbench/list_deep.sql" "$OUT/gateway-list.sql"
{
	echo "-- page 1"
	psql_q -c "PREPARE l AS $(sed 's/:status/$1/g; s/:lim/$2/g; s/;$//' "$WORK/pgbench/list_page1.sql")" \
		-c "EXPLAIN (ANALYZE, BUFFERS) EXECUTE l('UP', $((FIRST + 1)))"
	KT=$(grep -- '-Dktime=' "$WORK/pgbench/list_deep.args" | cut -d= -f2-)
	KI=$(grep -- '-Dkid=' "$WORK/pgbench/list_deep.args" | cut -d= -f2-)
	echo "-- page $PAGES"
	psql_q -c "PREPARE l AS $(sed 's/:status/$1/g; s/:lim/$2/g; s/:ktime/$3/g; s/:kid/$4/g; s/;$//' "$WORK/pgbench/list_deep.sql")" \
		-c "EXPLAIN (ANALYZE, BUFFERS) EXECUTE l('UP', $((FIRST + 1)), '$KT', '$KI')"
} >"$OUT/explain.txt" 2>&1 || log "EXPLAIN failed (see $OUT/explain.txt)"

# --- 4. measure ----------------------------------------------------------------------------------
# CPU accounting (clock ticks), to tell the gateway's cost per request apart from what else runs.
CLK=$(getconf CLK_TCK)
gw_ticks() { # utime+stime of the gateway process
	local s
	read -r s 2>/dev/null <"/proc/$GW_PID/stat" || { echo 0; return; }
	set -- ${s##*) }
	echo $((${12} + ${13}))
}
pg_ticks() { # the cluster: live children of the postmaster, plus the children it has reaped
	local f s t=0 PM_PID
	PM_PID=$(head -1 "$DATA/pgdata/postmaster.pid") # a restarted gateway restarts its cluster
	for f in /proc/[0-9]*/stat; do
		read -r s 2>/dev/null <"$f" || continue
		set -- ${s##*) }
		[ "$2" = "$PM_PID" ] && t=$((t + ${12} + ${13}))
		[ "$f" = "/proc/$PM_PID/stat" ] && t=$((t + ${14} + ${15}))
	done
	echo $t
}
busy_ticks() { # all CPUs, busy time
	awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
}
ms_per() { awk -v t="$1" -v n="$2" -v c="$CLK" 'BEGIN { if (n > 0) printf "%.3f", t / c * 1000 / n; else print "n/a" }'; }
cores() { awk -v t="$1" -v c="$CLK" -v d="$2" 'BEGIN { printf "%.2f", t / c / d }'; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { print b - a }'; }

RSS_LOG=$WORK/rss.kb
: >"$RSS_LOG"
HWM_LOG=$WORK/hwm.kb
: >"$HWM_LOG"
start_sampler() { # the gateway's resident memory, every 0.25 s
	(while kill -0 "$GW_PID" 2>/dev/null; do
		awk '/^VmRSS:/ { print $2 }' "/proc/$GW_PID/status" >>"$RSS_LOG" 2>/dev/null || true
		sleep 0.25
	done) &
	SAMPLER_PID=$!
}
record_hwm() { awk '/^VmHWM:/ { print $2 }' "/proc/$GW_PID/status" >>"$HWM_LOG"; }

NAMES=(list_page1 list_deep device)
declare -A LABEL=(
	[list_page1]="devices(first: $FIRST, filter: {status: UP}), page 1"
	[list_deep]="devices(first: $FIRST, filter: {status: UP}), page $PAGES"
	[device]="device(id), $NIDS random ids (pgbench: 128)"
)
declare -A GW_RPS GW_P50 GW_P99 GW_ERR GW_HITS GW_CPU GW_PGCPU GW_BUSY
declare -A PG_TPS PG_P50 PG_P99 PG_AVG PG_CPU PG_BUSY
field() { sed -n "s/.*[ ]$1=\([^ ]*\).*/\1/p" <<<"$2"; }
wrk_run() { # name seconds [latency]
	local extra=()
	[ "$1" = device ] && extra=("$WORK/ids.txt")
	wrk -t"$THREADS" -c"$CONNS" -d"$2s" --timeout 10s ${3:+--latency} -s "$ROOT/bench/graphql.lua" "$URL" \
		-- "$WORK/$1.json" "${extra[@]}"
}
measure_gateway() { # name mode
	local key=$1/$2 g0 p0 b0 w0 g1 p1 b1 res n
	log "wrk $1 ($2): ${WARMUP}s warm-up, ${DURATION}s measured, $CONNS connections, $THREADS threads"
	wrk_run "$1" "$WARMUP" >/dev/null
	# What else runs on the machine (a 2-core box: wrk, the gateway and PostgreSQL already compete).
	command -v top >/dev/null &&
		(sleep $((DURATION / 2)); top -b -n1 -w 200 | head -20 >"$WORK/raw/top-$1-$2.txt" 2>/dev/null) &
	g0=$(gw_ticks) p0=$(pg_ticks) b0=$(busy_ticks) w0=$(now)
	wrk_run "$1" "$DURATION" latency >"$WORK/raw/wrk-$1-$2.txt"
	g1=$(gw_ticks) p1=$(pg_ticks) b1=$(busy_ticks)
	GW_BUSY[$key]=$(cores $((b1 - b0)) "$(since "$w0")")
	res=$(grep '^RESULT' "$WORK/raw/wrk-$1-$2.txt") || die "wrk $1: no result"
	n=$(field requests "$res")
	GW_RPS[$key]=$(field rps "$res")
	GW_P50[$key]=$(awk -v v="$(field p50_us "$res")" 'BEGIN { printf "%.2f", v / 1000 }')
	GW_P99[$key]=$(awk -v v="$(field p99_us "$res")" 'BEGIN { printf "%.2f", v / 1000 }')
	GW_ERR[$key]=$(($(field errors "$res") + $(field socket_errors "$res")))
	GW_HITS[$key]=$(awk -v h="$(field cache_hits "$res")" -v n="$n" 'BEGIN { if (n > 0) printf "%.0f%%", 100 * h / n; else print "n/a" }')
	GW_CPU[$key]=$(ms_per $((g1 - g0)) "$n")
	GW_PGCPU[$key]=$(ms_per $((p1 - p0)) "$n")
	log "  ${GW_RPS[$key]} req/s, p50 ${GW_P50[$key]} ms, p99 ${GW_P99[$key]} ms, errors ${GW_ERR[$key]}, cache hits ${GW_HITS[$key]};" \
		"CPU/req: gateway ${GW_CPU[$key]} ms, PostgreSQL ${GW_PGCPU[$key]} ms"
}
measure_pgbench() { # name
	local vars pgb p0 b0 w0 w1 p1 b1 n
	mapfile -t vars <"$WORK/pgbench/$1.args"
	pgb=("$PGBENCH" -h "$SOCK" -U gpugate -n -c "$CONNS" -j "$THREADS" -M extended -f "$WORK/pgbench/$1.sql" "${vars[@]}")
	log "pgbench $1: ${WARMUP}s warm-up, ${DURATION}s measured"
	"${pgb[@]}" -T "$WARMUP" gpugate >/dev/null 2>&1
	rm -f "$WORK/pgbench/log-$1".*
	sleep 0.5 # let the postmaster reap the warm-up's backends
	p0=$(pg_ticks) b0=$(busy_ticks) w0=$(now)
	"${pgb[@]}" -T "$DURATION" --log --log-prefix="$WORK/pgbench/log-$1" gpugate >"$WORK/raw/pgbench-$1.txt" 2>&1 ||
		{ cat "$WORK/raw/pgbench-$1.txt" >&2; die "pgbench $1 failed"; }
	sleep 0.5
	p1=$(pg_ticks) b1=$(busy_ticks)
	PG_BUSY[$1]=$(cores $((b1 - b0)) "$(since "$w0")")
	n=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$WORK/raw/pgbench-$1.txt")
	PG_CPU[$1]=$(ms_per $((p1 - p0)) "$n")
	PG_TPS[$1]=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$WORK/raw/pgbench-$1.txt" | tail -1)
	PG_AVG[$1]=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' "$WORK/raw/pgbench-$1.txt")
	# Transaction log lines: client_id transaction_no time(us) script_no time_epoch time_us
	read -r "PG_P50[$1]" "PG_P99[$1]" < <(cat "$WORK/pgbench/log-$1".* | awk '{ print $3 }' | sort -n |
		awk '{ v[NR] = $1 } END { i50 = int(NR * 0.50 + 0.5); i99 = int(NR * 0.99 + 0.5); if (i50 < 1) i50 = 1; if (i99 < 1) i99 = 1;
			printf "%.2f %.2f\n", v[i50] / 1000, v[i99] / 1000 }')
	log "  ${PG_TPS[$1]} tps, p50 ${PG_P50[$1]} ms, p99 ${PG_P99[$1]} ms (average ${PG_AVG[$1]} ms); CPU/txn: PostgreSQL ${PG_CPU[$1]} ms"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
MODES=()
if [ "$HAS_CACHE" = 1 ]; then
	# As shipped (1 s micro-cache), then restarted with the cache off.
	MODES+=(cached)
	start_sampler
	for name in "${NAMES[@]}"; do measure_gateway "$name" cached; done
	record_hwm
	stop_sampler
	stop_gateway
	start_gateway --public-cache-ttl 0
fi
# The gateway running the queries, interleaved with pgbench so that both sides of a ratio see the
# same machine.
MODES+=(uncached)
start_sampler
for name in "${NAMES[@]}"; do
	measure_gateway "$name" uncached
	measure_pgbench "$name"
done
record_hwm
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
RSS_NOW=$(awk '/^VmRSS:/ { print $2 }' "/proc/$GW_PID/status")
stop_sampler
RSS_PEAK=$(sort -n "$RSS_LOG" | tail -1)
RSS_HWM=$(sort -n "$HWM_LOG" | tail -1)
mb() { awk -v v="$1" 'BEGIN { printf "%.1f", v / 1024 }'; }

# --- 5. report ---------------------------------------------------------------------------------
CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
PGVER=$("$PGBIN/postgres" --version | awk '{ print $3 }')
REV=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(cd "$ROOT" && [ -n "$(git status --porcelain 2>/dev/null)" ] && echo " (+ uncommitted changes)" || true)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
verdict() { if [ "$1" = 1 ]; then echo met; else echo "**missed**"; fi; }
declare -A MODE_LABEL=([cached]="micro-cache on (default)" [uncached]="cache off: runs the SQL")
# Go's duration format: 950ms, 41.2s, 1m2.5s.
SEED_S=$(awk -v s="$SEED_TX" 'BEGIN { t = 0
	if (s ~ /ms$/) { sub(/ms$/, "", s); t = s / 1000 }
	else { if (s ~ /m/) { split(s, a, "m"); t = a[1] * 60; s = a[2] } sub(/s$/, "", s); t += s }
	printf "%.1f", t }')
ok_seed=$(awk -v s="$SEED_WALL" -v l="$SEED_LIMIT" 'BEGIN { print (s < l) ? 1 : 0 }')
declare -A OK_RATIO OK_DEEP
for mode in "${MODES[@]}"; do
	OK_RATIO[$mode]=1
	for name in "${NAMES[@]}"; do
		r=$(ratio "${GW_RPS[$name/$mode]}" "${PG_TPS[$name]}")
		awk -v r="$r" 'BEGIN { exit !(r >= 0.5) }' || OK_RATIO[$mode]=0
	done
	# "Page N is as fast as page 1": within 20% on req/s and on p50.
	OK_DEEP[$mode]=$(awk -v a="${GW_RPS[list_deep/$mode]}" -v b="${GW_RPS[list_page1/$mode]}" \
		-v c="${GW_P50[list_deep/$mode]}" -v d="${GW_P50[list_page1/$mode]}" \
		'BEGIN { print (a >= 0.8 * b && c <= 1.2 * d) ? 1 : 0 }')
done
ok_deep_pg=$(awk -v a="${PG_TPS[list_deep]}" -v b="${PG_TPS[list_page1]}" -v c="${PG_P50[list_deep]}" -v d="${PG_P50[list_page1]}" \
	'BEGIN { print (a >= 0.8 * b && c <= 1.2 * d) ? 1 : 0 }')
ok_rss=$(awk -v v="$RSS_HWM" 'BEGIN { print (v < 100 * 1024) ? 1 : 0 }')
errors=0
for mode in "${MODES[@]}"; do for name in "${NAMES[@]}"; do errors=$((errors + GW_ERR[$name/$mode])); done; done

{
	echo "## gpugate benchmark: $(date -u +'%Y-%m-%d %H:%M UTC'), commit $REV$DIRTY"
	echo
	echo "$DEVICES devices; $CONNS connections, $THREADS threads, ${DURATION}s per measurement after a ${WARMUP}s warm-up;"
	echo "machine: $(nproc) CPUs ($CPU), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, PostgreSQL $PGVER;"
	echo "load average (1, 5, 15 min) before the measurements: $LOAD_BEFORE; after: $LOAD_AFTER."
	echo
	echo "| query | gateway req/s | p50 ms | p99 ms | pgbench tps | p50 ms | p99 ms | ratio |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|"
	for name in "${NAMES[@]}"; do
		for mode in "${MODES[@]}"; do
			printf '| %s — %s | %.0f | %s | %s | %.0f | %s | %s | %s |\n' "${LABEL[$name]}" "${MODE_LABEL[$mode]}" \
				"${GW_RPS[$name/$mode]}" "${GW_P50[$name/$mode]}" "${GW_P99[$name/$mode]}" \
				"${PG_TPS[$name]}" "${PG_P50[$name]}" "${PG_P99[$name]}" "$(ratio "${GW_RPS[$name/$mode]}" "${PG_TPS[$name]}")"
		done
	done
	echo
	echo "Where the CPU goes (from /proc: the gateway process; PostgreSQL = every process of its cluster), the share of"
	echo "responses served from the micro-cache (X-Cache: hit), and how busy the whole machine was (cores of $(nproc)):"
	echo
	echo "| query | gateway | cache hits | gateway CPU ms/req | PostgreSQL CPU ms/req | busy cores | pgbench: PostgreSQL CPU ms/txn | busy cores |"
	echo "|---|---|---:|---:|---:|---:|---:|---:|"
	for name in "${NAMES[@]}"; do
		for mode in "${MODES[@]}"; do
			printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "${LABEL[$name]}" "$mode" "${GW_HITS[$name/$mode]}" \
				"${GW_CPU[$name/$mode]}" "${GW_PGCPU[$name/$mode]}" "${GW_BUSY[$name/$mode]}" "${PG_CPU[$name]}" "${PG_BUSY[$name]}"
		done
	done
	echo
	echo "- seed: ${SEED_S}s in the seed transaction; ${SEED_WALL}s for \`gpugate seed --devices $DEVICES\` with a fresh cluster (initdb, start, migrate, seed, stop)"
	echo "- \`VACUUM (ANALYZE) devices, gpus\` after the seed, before measuring: ${VACUUM_S}s"
	echo "- walk to page $PAGES: $((PAGES - 1)) sequential requests in ${WALK_S}s"
	echo "- gateway resident memory: peak $(mb "$RSS_PEAK") MB sampled every 0.25 s during the measurements, VmHWM $(mb "$RSS_HWM") MB, $(mb "$RSS_NOW") MB at the end"
	echo "- gateway responses with errors (GraphQL errors, non-200, socket errors): $errors"
	echo "- gateway flags: --seed 0 --log-level warn ${GW_FLAGS[*]}"
	echo
	echo "| target | result |"
	echo "|---|---|"
	echo "| seed $DEVICES devices in under ${SEED_LIMIT} s | $(verdict "$ok_seed") (${SEED_WALL}s) |"
	for mode in "${MODES[@]}"; do
		echo "| gateway ≥ 0.5 × pgbench req/s at $CONNS clients, $mode | $(verdict "${OK_RATIO[$mode]}") |"
	done
	echo "| page $PAGES as fast as page 1 (req/s and p50 within 20%), pgbench | $(verdict "$ok_deep_pg") |"
	for mode in "${MODES[@]}"; do
		echo "| page $PAGES as fast as page 1 (req/s and p50 within 20%), gateway $mode | $(verdict "${OK_DEEP[$mode]}") |"
	done
	echo "| gateway RSS under 100 MB | $(verdict "$ok_rss") ($(mb "$RSS_HWM") MB) |"
	echo
	echo "ratio = gateway req/s ÷ pgbench tps. pgbench: -c $CONNS -j $THREADS -M extended, one gateway statement per transaction;"
	echo "p50/p99 from its --log transaction logs."
} >"$OUT/results.md"
cp "$WORK"/raw/* "$OUT/" 2>/dev/null || true
echo
cat "$OUT/results.md"
log "written to $OUT/results.md"
