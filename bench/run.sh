#!/usr/bin/env bash
# bench/run.sh: seed a fresh database with 1,000,000 devices, then measure, on that database and in
# one run, the explorer's hot reads four ways: raw SQL (pgbench -M prepared, the minimal statement
# for the same rows), gpugate with its micro-cache off, PostGraphile (the reference peer, over a
# view of the same table) and gpugate with its 1 s micro-cache; plus pgbench running the gateway's
# own SQL and a page of devices with their GPUs. See bench/README.md.
#
# Usage: bench/run.sh [--quick]
#   --quick (or BENCH_QUICK=1): 100,000 devices, 5 s cells, 1 s warm-ups, page 100: a few minutes.
#
# Environment (all optional): BENCH_DEVICES (1000000), BENCH_DURATION seconds per measurement
# (20), BENCH_WARMUP seconds (3), BENCH_CONNS (16), BENCH_THREADS (2), BENCH_PAGES (1000: the
# deep page), BENCH_IDS (10000: random device ids for device(id)), BENCH_GATEWAY_FLAGS (replaces
# the default extra serve flags, see below), BENCH_POSTGRAPHILE=0 skips PostGraphile,
# BENCH_POSTGRAPHILE_FLAGS (extra PostGraphile CLI flags), BENCH_KEEP=1 keeps the work directory,
# BENCH_OUT (bench/out).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
case ${1:-} in
--quick) BENCH_QUICK=1 ;;
"") ;;
*) echo "usage: bench/run.sh [--quick]" >&2; exit 2 ;;
esac
if [ "${BENCH_QUICK:-0}" = 1 ]; then
	: "${BENCH_DEVICES:=100000}" "${BENCH_DURATION:=5}" "${BENCH_WARMUP:=1}" "${BENCH_PAGES:=100}"
fi
DEVICES=${BENCH_DEVICES:-1000000}
DURATION=${BENCH_DURATION:-20}
WARMUP=${BENCH_WARMUP:-3}
CONNS=${BENCH_CONNS:-16}
THREADS=${BENCH_THREADS:-2}
PAGES=${BENCH_PAGES:-1000}
WANT_IDS=${BENCH_IDS:-10000}
FIRST=50
GPU_FIRST=100 # the explorer's table: a page of 100 devices with their GPUs
OUT=${BENCH_OUT:-$ROOT/bench/out}
SEED_LIMIT=60
PGL_VERSION=4.14.1 # bench/postgraphile/package.json pins it; the lockfile pins its dependencies

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

# PostGraphile, the reference peer: installed with npm from bench/postgraphile's package.json and
# package-lock.json (npm ci: exactly the locked versions) into the user cache dir, once per lockfile
# and Node version; never into the repository. Without Node.js and npm, or when the install fails
# (offline), its column is skipped with a notice: the rest of the run does not depend on it.
PGL_CLI=""
PGL_SKIP=""
if [ "${BENCH_POSTGRAPHILE:-1}" = 0 ]; then
	PGL_SKIP="skipped: BENCH_POSTGRAPHILE=0"
elif ! command -v node >/dev/null || ! command -v npm >/dev/null; then
	PGL_SKIP="skipped: Node.js and npm are not installed (apt-get install -y nodejs npm, or Node 18+ from nodejs.org)"
else
	# As Go's os.UserCacheDir, like scripts/lint-tools.
	if [ -n "${XDG_CACHE_HOME:-}" ]; then PGL_DIR=$XDG_CACHE_HOME/gpugate/postgraphile
	elif [ -n "${HOME:-}" ]; then PGL_DIR=$HOME/.cache/gpugate/postgraphile
	else PGL_DIR=${TMPDIR:-/tmp}/gpugate/postgraphile; fi
	stamp=$( { cat "$ROOT/bench/postgraphile/package.json" "$ROOT/bench/postgraphile/package-lock.json"; node --version; } | sha256sum | cut -c1-16)
	if [ "$(cat "$PGL_DIR/.installed" 2>/dev/null)" != "$stamp" ] || [ ! -f "$PGL_DIR/node_modules/postgraphile/cli.js" ]; then
		log "installing postgraphile@$PGL_VERSION into $PGL_DIR (npm ci, once per lockfile)"
		mkdir -p "$PGL_DIR"
		rm -f "$PGL_DIR/.installed"
		cp "$ROOT/bench/postgraphile/package.json" "$ROOT/bench/postgraphile/package-lock.json" "$PGL_DIR/"
		if (cd "$PGL_DIR" && npm ci --omit=dev --no-audit --no-fund --loglevel=error >"$PGL_DIR/npm-ci.log" 2>&1); then
			echo "$stamp" >"$PGL_DIR/.installed"
		else
			PGL_SKIP="skipped: npm ci failed (see $PGL_DIR/npm-ci.log)"
		fi
	fi
	[ -n "$PGL_SKIP" ] || PGL_CLI=$PGL_DIR/node_modules/postgraphile/cli.js
fi
if [ -n "$PGL_SKIP" ]; then
	log "NOTICE: the PostGraphile column is $PGL_SKIP"
else
	PGL_VERSION=$(node -p "require('$PGL_DIR/node_modules/postgraphile/package.json').version")
	NODE_VERSION=$(node --version)
fi

# --- work directory, cleanup -----------------------------------------------------------------
WORK=$(mktemp -d /tmp/gpugate-bench.XXXXXX)
chmod 755 "$WORK" # postgres runs as its own OS user when we are root
DATA=$WORK/data
mkdir -p "$OUT" "$WORK/pgbench" "$WORK/raw"
rm -f "$OUT"/{top,wrk,pgbench}-*.txt "$OUT"/{seed,serve,postgraphile}.log "$OUT"/{results.md,explain.txt,gateway-list.sql,raw-list.sql,raw-device.sql}
GW_PID=""
PGL_PID=""
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
stop_postgraphile() {
	if [ -n "$PGL_PID" ] && kill -0 "$PGL_PID" 2>/dev/null; then
		log "stopping PostGraphile"
		kill -TERM "$PGL_PID" 2>/dev/null || true
		for _ in $(seq 1 20); do kill -0 "$PGL_PID" 2>/dev/null || break; sleep 0.5; done
		kill -KILL "$PGL_PID" 2>/dev/null || true
		wait "$PGL_PID" 2>/dev/null || true
	fi
	PGL_PID=""
}
cleanup() {
	local rc=$?
	stop_sampler
	stop_postgraphile
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
# As the Makefile: no pages of go-nvml's deprecation warnings, and the same build cache.
export CGO_CFLAGS=${CGO_CFLAGS:--O2 -g -Wno-deprecated-declarations}
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

# --- 3. ids, the deep cursor, the request bodies -------------------------------------------------
# BENCH_IDS device ids spread over the whole table (md5 of the random UUIDs: uniform and repeatable
# on the same data; a sample's LIMIT would take the first rows in physical, i.e. creation, order).
psql_q -c "SELECT id FROM devices WHERE removed_at IS NULL ORDER BY md5(id::text) LIMIT $WANT_IDS" >"$WORK/ids.txt"
NIDS=$(wc -l <"$WORK/ids.txt")
[ "$NIDS" -ge 128 ] || die "sampled only $NIDS device ids"

FIELDS='id name status region verification gpuModel gpuCount lastSeenAt createdAt'
GPU_FIELDS=${BENCH_GPU_FIELDS:-index uuid model memoryMiB architecture computeCapability}
LIST_Q="query(\$after: String) { devices(first: $FIRST, after: \$after, filter: {status: UP}) { edges { node { $FIELDS } } pageInfo { hasNextPage endCursor } } }"
GPU_Q="{ devices(first: $GPU_FIRST, filter: {status: UP}) { edges { node { $FIELDS gpus { $GPU_FIELDS } } } pageInfo { hasNextPage endCursor } } }"
log "walking to page $PAGES of devices(first: $FIRST, filter: {status: UP})"
WALK_OUT=$("$TOOL" walk -url "$URL" -pages "$PAGES" -query "$LIST_Q") || die "the walk to page $PAGES failed"
read -r CURSOR WALK_S <<<"$WALK_OUT"
log "page $PAGES cursor found: $((PAGES - 1)) requests in ${WALK_S}s"

json_str() { printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g'; }
printf '{"query":"%s","variables":{"after":null}}' "$(json_str "$LIST_Q")" >"$WORK/list_page1.json"
printf '{"query":"%s","variables":{"after":"%s"}}' "$(json_str "$LIST_Q")" "$CURSOR" >"$WORK/list_deep.json"
printf '{"query":"%s","variables":{"id":"%%ID%%"}}' \
	"$(json_str "query(\$id: ID!) { device(id: \$id) { $FIELDS } }")" >"$WORK/device.json"
printf '{"query":"%s"}' "$(json_str "$GPU_Q")" >"$WORK/list_gpus.json"
# PostGraphile's schema over the view bench_peer.devices (created below) returns the same rows:
# its simple collection with the same condition and order, and the row by primary key.
printf '{"query":"%s"}' "$(json_str "{ allDevicesList(first: $FIRST, condition: {status: \"UP\"}, orderBy: [CREATED_AT_DESC, ID_DESC]) { $FIELDS } }")" \
	>"$WORK/pgl-list_page1.json"
printf '{"query":"%s","variables":{"id":"%%ID%%"}}' \
	"$(json_str "query(\$id: UUID!) { deviceById(id: \$id) { $FIELDS } }")" >"$WORK/pgl-device.json"

# Each body must answer without errors, with the rows it asks for.
post() { curl -sS -XPOST -H 'Content-Type: application/json' --data-binary "$2" "$1"; }
check() { # url name body expected-ids
	local out n
	out=$(post "$1" "$3") || die "$2: request failed"
	case $out in *'"errors"'*) die "$2: ${out:0:500}" ;; esac
	n=$(printf '%s' "$out" | grep -o '"id":' | wc -l)
	[ "$n" = "$4" ] || die "$2: expected $4 devices, got $n: ${out:0:300}"
}
check "$URL" list_page1 "$(cat "$WORK/list_page1.json")" "$FIRST"
check "$URL" list_deep "$(cat "$WORK/list_deep.json")" "$FIRST"
check "$URL" device "$(sed "s/%ID%/$(head -1 "$WORK/ids.txt")/" "$WORK/device.json")" 1

# The page with GPUs may cost more than the shipped --max-cost (Device.gpus counts as its bound,
# 64 GPUs, per device). Then the gateway measured without the cache gets --max-cost and
# --heavy-cost just above its cost, so that the row measures what the query costs to run rather
# than its refusal or the --max-heavy queue; results.md says so.
GPU_LIMIT_FLAGS=()
GPU_COST_NOTE=""
out=$(post "$URL" "$(cat "$WORK/list_gpus.json")") || die "list_gpus: request failed"
gpu_cost=$(printf '%s' "$out" | sed -n 's/.*the operation costs \([0-9]*\); the limit is \([0-9]*\).*/\1 \2/p')
if [ -n "$gpu_cost" ]; then
	read -r c lim <<<"$gpu_cost"
	GPU_LIMIT_FLAGS=(--max-cost $((c + 1)) --heavy-cost $((c + 1)))
	GPU_COST_NOTE="the shipped gateway refuses this query (cost $c > --max-cost $lim); measured with ${GPU_LIMIT_FLAGS[*]}"
	log "NOTICE: list_gpus: $GPU_COST_NOTE"
else
	case $out in *'"errors"'*) die "list_gpus: ${out:0:500}" ;; esac
fi

# pgbench scripts with the gateway's own SQL, and EXPLAIN of each for the record.
"$TOOL" pgbench -out "$WORK/pgbench" -status UP -first "$FIRST" -cursor "$CURSOR" \
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

# Raw SQL: the minimal statement for the same rows (the 9 public columns; the same conditions as
# the gateway: UP, not removed, newest first with id as the tie-break), prepared (-M prepared).
# pgbench variables are numbers unless set with -D, so device(id) draws a random index into a
# table of the same ids wrk rotates through, looked up in the same statement (one more
# primary-key probe of a small table: the raw side pays it, not the gateway).
COLS='id, name, status, region, verification, gpu_model, gpu_count, last_seen_at, created_at'
mkdir -p "$WORK/rawsql"
cat >"$WORK/rawsql/list_page1.sql" <<SQL
SELECT $COLS FROM devices WHERE status = 'UP' AND removed_at IS NULL ORDER BY created_at DESC, id DESC LIMIT $FIRST;
SQL
cat >"$WORK/rawsql/device.sql" <<SQL
\\set n random(1, $NIDS)
SELECT $COLS FROM devices WHERE id = (SELECT id FROM bench_raw.ids WHERE n = :n) AND removed_at IS NULL;
SQL
: >"$WORK/rawsql/list_page1.args"
: >"$WORK/rawsql/device.args"
# The ids table and PostGraphile's view live in their own schemas of the same database; the
# view exposes the 9 public fields of the gateway's rows. "@primaryKey id" (a PostGraphile smart
# comment) gives the view deviceById.
{
	echo "CREATE SCHEMA bench_raw; CREATE TABLE bench_raw.ids (n integer PRIMARY KEY, id uuid NOT NULL);"
	echo "COPY bench_raw.ids (n, id) FROM STDIN;"
	awk '{ print NR "\t" $1 }' "$WORK/ids.txt"
	echo '\.'
	echo "ANALYZE bench_raw.ids;"
	echo "CREATE SCHEMA bench_peer;"
	echo "CREATE VIEW bench_peer.devices AS SELECT $COLS FROM public.devices WHERE removed_at IS NULL;"
	echo "COMMENT ON VIEW bench_peer.devices IS E'@primaryKey id';"
} | psql_q >/dev/null

# --- 4. measure ----------------------------------------------------------------------------------
# CPU accounting (clock ticks), to tell the gateway's cost per request apart from what else runs.
CLK=$(getconf CLK_TCK)
proc_ticks() { # utime+stime of process $1 (all its threads)
	local s
	[ -n "$1" ] || { echo 0; return; }
	read -r s 2>/dev/null <"/proc/$1/stat" || { echo 0; return; }
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

PGL_URL=""
start_postgraphile() {
	local port i
	port=$("$TOOL" freeport)
	PGL_URL=http://127.0.0.1:$port/graphql
	# No GraphiQL, no watch mode, no query log; simple collections only (plain lists, as the
	# query above asks); NODE_ENV=production as a deployment would run it.
	log "starting PostGraphile $PGL_VERSION on 127.0.0.1:$port ${BENCH_POSTGRAPHILE_FLAGS:-}"
	# shellcheck disable=SC2086 # BENCH_POSTGRAPHILE_FLAGS is a list of flags
	NODE_ENV=production node "$PGL_CLI" -c "postgres://gpugate@/gpugate?host=$SOCK" \
		-s bench_peer -n 127.0.0.1 -p "$port" --disable-graphiql --simple-collections only \
		--disable-default-mutations --disable-query-log ${BENCH_POSTGRAPHILE_FLAGS:-} \
		>>"$WORK/raw/postgraphile.log" 2>&1 &
	PGL_PID=$!
	for i in $(seq 1 120); do
		if post "$PGL_URL" '{"query":"{ __typename }"}' 2>/dev/null | grep -q '"data"'; then return 0; fi
		kill -0 "$PGL_PID" 2>/dev/null || { cat "$WORK/raw/postgraphile.log" >&2; die "PostGraphile exited"; }
		sleep 0.5
	done
	die "PostGraphile is not ready after 60 s"
}

# Query names; a cell of the results is name/column, the columns being
#   raw (pgbench -M prepared, minimal SQL), uncached, postgraphile, cached (gpugate over HTTP),
#   gwsql (pgbench -M extended running the gateway's own statement).
declare -A LABEL=(
	[list_page1]="first $FIRST UP devices, newest first"
	[list_deep]="the same, page $PAGES"
	[device]="device by id ($(awk -v v="$NIDS" 'BEGIN { s = v ""; o = ""; while (length(s) > 3) { o = "," substr(s, length(s) - 2) o; s = substr(s, 1, length(s) - 3) } print s o }') random ids)"
	[list_gpus]="$GPU_FIRST UP devices with their GPUs, newest first"
)
declare -A R_RPS R_P50 R_P99 R_ERR R_HITS R_SRV R_PG R_BUSY
field() { sed -n "s/.*[ ]$1=\([^ ]*\).*/\1/p" <<<"$2"; }
wrk_run() { # url body-file seconds [latency]
	local extra=()
	grep -q '%ID%' "$2" && extra=("$WORK/ids.txt")
	wrk -t"$THREADS" -c"$CONNS" -d"$3s" --timeout 10s ${4:+--latency} -s "$ROOT/bench/graphql.lua" "$1" \
		-- "$2" "${extra[@]}"
}
measure_http() { # name column (cached|uncached: the gateway; postgraphile)
	local key=$1/$2 url=$URL body=$WORK/$1.json pid=$GW_PID s0 p0 b0 w0 s1 p1 b1 res n
	if [ "$2" = postgraphile ]; then url=$PGL_URL body=$WORK/pgl-$1.json pid=$PGL_PID; fi
	log "wrk $1 ($2): ${WARMUP}s warm-up, ${DURATION}s measured, $CONNS connections, $THREADS threads"
	wrk_run "$url" "$body" "$WARMUP" >/dev/null
	# What else runs on the machine (a 2-core box: wrk, the server and PostgreSQL already compete).
	command -v top >/dev/null &&
		(sleep $((DURATION / 2)); top -b -n1 -w 200 | head -20 >"$WORK/raw/top-$1-$2.txt" 2>/dev/null) &
	s0=$(proc_ticks "$pid") p0=$(pg_ticks) b0=$(busy_ticks) w0=$(now)
	wrk_run "$url" "$body" "$DURATION" latency >"$WORK/raw/wrk-$1-$2.txt"
	s1=$(proc_ticks "$pid") p1=$(pg_ticks) b1=$(busy_ticks)
	R_BUSY[$key]=$(cores $((b1 - b0)) "$(since "$w0")")
	res=$(grep '^RESULT' "$WORK/raw/wrk-$1-$2.txt") || die "wrk $1 $2: no result"
	n=$(field requests "$res")
	R_RPS[$key]=$(field rps "$res")
	R_P50[$key]=$(awk -v v="$(field p50_us "$res")" 'BEGIN { printf "%.2f", v / 1000 }')
	R_P99[$key]=$(awk -v v="$(field p99_us "$res")" 'BEGIN { printf "%.2f", v / 1000 }')
	R_ERR[$key]=$(($(field errors "$res") + $(field socket_errors "$res")))
	R_HITS[$key]=$(awk -v h="$(field cache_hits "$res")" -v n="$n" 'BEGIN { if (n > 0) printf "%.0f%%", 100 * h / n; else print "n/a" }')
	R_SRV[$key]=$(ms_per $((s1 - s0)) "$n")
	R_PG[$key]=$(ms_per $((p1 - p0)) "$n")
	log "  ${R_RPS[$key]} req/s, p50 ${R_P50[$key]} ms, p99 ${R_P99[$key]} ms, errors ${R_ERR[$key]}, cache hits ${R_HITS[$key]};" \
		"CPU/req: $2 ${R_SRV[$key]} ms, PostgreSQL ${R_PG[$key]} ms"
}
measure_pgbench() { # name column (raw: minimal SQL, -M prepared; gwsql: the gateway's SQL, -M extended)
	local key=$1/$2 dir=$WORK/pgbench mode=extended vars pgb p0 b0 w0 p1 b1 n
	[ "$2" = raw ] && dir=$WORK/rawsql mode=prepared
	mapfile -t vars <"$dir/$1.args"
	pgb=("$PGBENCH" -h "$SOCK" -U gpugate -n -c "$CONNS" -j "$THREADS" -M "$mode" -f "$dir/$1.sql" "${vars[@]}")
	log "pgbench $1 ($2, -M $mode): ${WARMUP}s warm-up, ${DURATION}s measured"
	"${pgb[@]}" -T "$WARMUP" gpugate >/dev/null 2>&1
	rm -f "$dir/log-$1".*
	sleep 0.5 # let the postmaster reap the warm-up's backends
	p0=$(pg_ticks) b0=$(busy_ticks) w0=$(now)
	"${pgb[@]}" -T "$DURATION" --log --log-prefix="$dir/log-$1" gpugate >"$WORK/raw/pgbench-$1-$2.txt" 2>&1 ||
		{ cat "$WORK/raw/pgbench-$1-$2.txt" >&2; die "pgbench $1 $2 failed"; }
	sleep 0.5
	p1=$(pg_ticks) b1=$(busy_ticks)
	R_BUSY[$key]=$(cores $((b1 - b0)) "$(since "$w0")")
	n=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$WORK/raw/pgbench-$1-$2.txt")
	R_PG[$key]=$(ms_per $((p1 - p0)) "$n")
	R_SRV[$key]=n/a
	R_HITS[$key]=n/a
	R_ERR[$key]=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$WORK/raw/pgbench-$1-$2.txt")
	: "${R_ERR[$key]:=0}"
	R_RPS[$key]=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$WORK/raw/pgbench-$1-$2.txt" | tail -1)
	# Transaction log lines: client_id transaction_no time(us) script_no time_epoch time_us
	read -r "R_P50[$key]" "R_P99[$key]" < <(cat "$dir/log-$1".* | awk '{ print $3 }' | sort -n |
		awk '{ v[NR] = $1 } END { i50 = int(NR * 0.50 + 0.5); i99 = int(NR * 0.99 + 0.5); if (i50 < 1) i50 = 1; if (i99 < 1) i99 = 1;
			printf "%.2f %.2f\n", v[i50] / 1000, v[i99] / 1000 }')
	log "  ${R_RPS[$key]} tps, p50 ${R_P50[$key]} ms, p99 ${R_P99[$key]} ms; CPU/txn: PostgreSQL ${R_PG[$key]} ms"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
HAVE=() # the columns measured
if [ "$HAS_CACHE" = 1 ]; then
	# As shipped (1 s micro-cache), then restarted with the cache off.
	HAVE+=(cached)
	start_sampler
	for name in list_page1 list_deep device; do measure_http "$name" cached; done
	record_hwm
	stop_sampler
	stop_gateway
	start_gateway --public-cache-ttl 0 "${GPU_LIMIT_FLAGS[@]}"
else
	stop_gateway
	start_gateway "${GPU_LIMIT_FLAGS[@]}"
fi
check "$URL" list_gpus "$(cat "$WORK/list_gpus.json")" "$GPU_FIRST"
HAVE+=(uncached raw gwsql)
if [ -n "$PGL_CLI" ]; then
	start_postgraphile
	check "$PGL_URL" postgraphile-list_page1 "$(cat "$WORK/pgl-list_page1.json")" "$FIRST"
	check "$PGL_URL" postgraphile-device "$(sed "s/%ID%/$(head -1 "$WORK/ids.txt")/" "$WORK/pgl-device.json")" 1
	HAVE+=(postgraphile)
fi
has() { [[ " ${HAVE[*]} " == *" $1 "* ]]; }
# The gateway running the queries, interleaved with pgbench and PostGraphile so that every side of
# a ratio sees the same machine.
start_sampler
for name in list_page1 list_gpus list_deep device; do
	measure_http "$name" uncached
	case $name in list_page1 | device) measure_pgbench "$name" raw ;; esac
	case $name in list_page1 | list_deep | device) measure_pgbench "$name" gwsql ;; esac
	case $name in list_page1 | device) has postgraphile && measure_http "$name" postgraphile ;; esac
done
record_hwm
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
RSS_NOW=$(awk '/^VmRSS:/ { print $2 }' "/proc/$GW_PID/status")
stop_sampler
stop_postgraphile
RSS_PEAK=$(sort -n "$RSS_LOG" | tail -1)
RSS_HWM=$(sort -n "$HWM_LOG" | tail -1)
mb() { awk -v v="$1" 'BEGIN { printf "%.1f", v / 1024 }'; }

# --- 5. report ---------------------------------------------------------------------------------
CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
PGVER=$("$PGBIN/postgres" --version | awk '{ print $3 }')
REV=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(cd "$ROOT" && [ -n "$(git status --porcelain 2>/dev/null)" ] && echo " (+ uncommitted changes)" || true)
get() { # array key: the value, or empty when that cell was not measured
	local -n a=$1
	printf '%s' "${a[$2]:-}"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b > 0) printf "%.3g", a / b; else print "n/a" }'; }
# Integers with thousands separators, as in the issue: 14,686.
num() { awk -v v="$1" 'BEGIN { if (v == "") { print "—"; exit } s = sprintf("%.0f", v); o = "";
	while (length(s) > 3) { o = "," substr(s, length(s) - 2) o; s = substr(s, 1, length(s) - 3) } print s o }'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "" && b != "" && a + 0 >= b + 0) }'; }
lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "" && b != "" && a + 0 < b + 0) }'; }
verdict() { if "$@"; then echo met; else echo "**missed**"; fi; }
# Go's duration format: 950ms, 41.2s, 1m2.5s.
SEED_S=$(awk -v s="$SEED_TX" 'BEGIN { t = 0
	if (s ~ /ms$/) { sub(/ms$/, "", s); t = s / 1000 }
	else { if (s ~ /m/) { split(s, a, "m"); t = a[1] * 60; s = a[2] } sub(/s$/, "", s); t += s }
	printf "%.1f", t }')
rps() { get R_RPS "$1"; }
cell_rate() { # key: "N /s", or a dash when not measured
	local v
	v=$(rps "$1")
	if [ -n "$v" ]; then echo "$(num "$v") /s"; else echo "—"; fi
}
lat() { # key: "p50 / p99 ms"
	local a b
	a=$(get R_P50 "$1") b=$(get R_P99 "$1")
	if [ -n "$a" ]; then echo "$a / $b"; else echo "—"; fi
}
cpu() { # key: "server, PostgreSQL" CPU ms per request (+ the cache's hit share)
	local srv pg hits
	srv=$(get R_SRV "$1") pg=$(get R_PG "$1") hits=$(get R_HITS "$1")
	[ -n "$pg" ] || { echo "—"; return; }
	[ "$srv" = n/a ] && srv="—"
	printf '%s, %s' "$srv" "$pg"
	case $1 in */cached) printf ' (cache hits %s)' "$hits" ;; esac
}
# 100 devices with their GPUs against 50 without: throughput and gateway CPU per request.
GPU_RPS_X=$(ratio "$(rps list_page1/uncached)" "$(rps list_gpus/uncached)")
GPU_CPU_X=$(ratio "$(get R_SRV list_gpus/uncached)" "$(get R_SRV list_page1/uncached)")
errors=0
for k in "${!R_ERR[@]}"; do errors=$((errors + R_ERR[$k])); done
PGL_DESC="PostGraphile $PGL_VERSION"
[ -n "$PGL_CLI" ] && PGL_DESC+=" (Node $NODE_VERSION)" || PGL_DESC+=" $PGL_SKIP"

{
	echo "## gpugate benchmark: $(date -u +'%Y-%m-%d %H:%M UTC'), commit $REV$DIRTY"
	echo
	echo "$DEVICES devices; $CONNS connections, $THREADS threads, ${DURATION}s per measurement after a ${WARMUP}s warm-up;"
	echo "machine: $(nproc) CPUs ($CPU), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, PostgreSQL $PGVER; $PGL_DESC;"
	echo "load average (1, 5, 15 min) before the measurements: $LOAD_BEFORE; after: $LOAD_AFTER."
	echo
	echo "| query | raw SQL (pgbench) | gpugate, cache off | PostGraphile | gpugate, 1 s micro-cache |"
	echo "|---|---|---|---|---|"
	for name in list_page1 list_gpus device; do
		if [ "$name" = list_gpus ]; then
			# Next to the page without GPUs: the explorer's table should cost less than 2× it.
			printf '| %s | — | %s (the %s-device page runs %s× as many /s; %s× the gateway CPU per request) | — | — |\n' \
				"${LABEL[list_gpus]}" "$(cell_rate list_gpus/uncached)" "$FIRST" "$GPU_RPS_X" "$GPU_CPU_X"
			continue
		fi
		vs=""
		pgl="not measured (see above)"
		if [ -n "$(rps "$name/postgraphile")" ]; then
			vs="; $(ratio "$(rps "$name/uncached")" "$(rps "$name/postgraphile")")× PostGraphile"
			pgl="$(cell_rate "$name/postgraphile") ($(ratio "$(rps "$name/postgraphile")" "$(rps "$name/raw")")×)"
		fi
		printf '| %s | %s | %s (%s×%s) | %s | %s |\n' "${LABEL[$name]}" \
			"$(cell_rate "$name/raw")" \
			"$(cell_rate "$name/uncached")" "$(ratio "$(rps "$name/uncached")" "$(rps "$name/raw")")" "$vs" \
			"$pgl" "$(cell_rate "$name/cached")"
	done
	echo
	echo "(×) = ÷ raw SQL. Latency p50 / p99 in ms, and CPU per request in ms (the server process: the gateway or"
	echo "PostGraphile's Node process; PostgreSQL: every process of its cluster; from utime+stime in /proc):"
	echo
	echo "| query | raw SQL | gpugate, cache off | PostGraphile | gpugate, 1 s micro-cache |"
	echo "|---|---|---|---|---|"
	for name in list_page1 list_gpus device; do
		printf '| %s — p50 / p99 ms | %s | %s | %s | %s |\n' "${LABEL[$name]}" \
			"$(lat "$name/raw")" "$(lat "$name/uncached")" "$(lat "$name/postgraphile")" "$(lat "$name/cached")"
		printf '| %s — CPU ms/req: server, PostgreSQL | %s | %s | %s | %s |\n' "${LABEL[$name]}" \
			"$(cpu "$name/raw")" "$(cpu "$name/uncached")" "$(cpu "$name/postgraphile")" "$(cpu "$name/cached")"
	done
	echo
	echo "The gateway next to pgbench running the gateway's own statement (-M extended, as lib/pq sends it; device(id) over"
	echo "128 of the ids), and the deep page:"
	echo
	echo "| query | gateway | req/s | p50 ms | p99 ms | pgbench (gateway SQL) tps | p50 ms | p99 ms | ratio |"
	echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
	for name in list_page1 list_deep device; do
		for mode in cached uncached; do
			[ -n "$(rps "$name/$mode")" ] || continue
			printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "${LABEL[$name]}" "$mode" \
				"$(num "$(rps "$name/$mode")")" "$(get R_P50 "$name/$mode")" "$(get R_P99 "$name/$mode")" \
				"$(num "$(rps "$name/gwsql")")" "$(get R_P50 "$name/gwsql")" "$(get R_P99 "$name/gwsql")" \
				"$(ratio "$(rps "$name/$mode")" "$(rps "$name/gwsql")")"
		done
	done
	echo
	echo "- seed: ${SEED_S}s in the seed transaction; ${SEED_WALL}s for \`gpugate seed --devices $DEVICES\` with a fresh cluster (initdb, start, migrate, seed, stop)"
	echo "- \`VACUUM (ANALYZE) devices, gpus\` after the seed, before measuring: ${VACUUM_S}s"
	echo "- walk to page $PAGES: $((PAGES - 1)) sequential requests in ${WALK_S}s"
	echo "- gateway resident memory: peak $(mb "$RSS_PEAK") MB sampled every 0.25 s during the measurements, VmHWM $(mb "$RSS_HWM") MB, $(mb "$RSS_NOW") MB at the end"
	echo "- responses with errors (GraphQL errors, non-200, socket errors; pgbench failed transactions), all columns: $errors"
	echo "- gateway flags: --seed 0 --log-level warn ${GW_FLAGS[*]}; cache off: --public-cache-ttl 0 ${GPU_LIMIT_FLAGS[*]}"
	[ -z "$GPU_COST_NOTE" ] || echo "- ${LABEL[list_gpus]} (GPU fields: $GPU_FIELDS): $GPU_COST_NOTE"
	echo
	echo "| target (issue 10) | result |"
	echo "|---|---|"
	for name in list_page1 device; do
		echo "| ${LABEL[$name]}, cache off ≥ 0.5× raw SQL | $(verdict ge "$(ratio "$(rps "$name/uncached")" "$(rps "$name/raw")")" 0.5) ($(ratio "$(rps "$name/uncached")" "$(rps "$name/raw")")×) |"
		if has postgraphile; then
			echo "| ${LABEL[$name]}, cache off ≥ 5× PostGraphile | $(verdict ge "$(ratio "$(rps "$name/uncached")" "$(rps "$name/postgraphile")")" 5) ($(ratio "$(rps "$name/uncached")" "$(rps "$name/postgraphile")")×) |"
		else
			echo "| ${LABEL[$name]}, cache off ≥ 5× PostGraphile | not measured: PostGraphile $PGL_SKIP |"
		fi
		echo "| ${LABEL[$name]}, cache off: p99 under 20 ms at $CONNS connections | $(verdict lt "$(get R_P99 "$name/uncached")" 20) ($(get R_P99 "$name/uncached") ms) |"
	done
	echo "| ${LABEL[list_gpus]} costs less than 2× the $FIRST-device page without them (req/s) | $(verdict lt "$GPU_RPS_X" 2) (${GPU_RPS_X}×) |"
	echo "| the same, gateway CPU per request | $(verdict lt "$GPU_CPU_X" 2) (${GPU_CPU_X}×) |"
	echo "| seed $DEVICES devices in under ${SEED_LIMIT} s | $(verdict lt "$SEED_WALL" "$SEED_LIMIT") (${SEED_WALL}s) |"
	for mode in cached uncached gwsql; do
		[ -n "$(rps "list_deep/$mode")" ] || continue
		# "Page N is as fast as page 1": within 20% on req/s and on p50.
		ok=0
		awk -v a="$(rps "list_deep/$mode")" -v b="$(rps "list_page1/$mode")" -v c="$(get R_P50 "list_deep/$mode")" \
			-v d="$(get R_P50 "list_page1/$mode")" 'BEGIN { exit !(a >= 0.8 * b && c <= 1.2 * d) }' && ok=1
		echo "| page $PAGES as fast as page 1 (req/s and p50 within 20%), $mode | $(verdict [ $ok = 1 ]) |"
	done
	echo "| gateway RSS under 100 MB | $(verdict lt "$RSS_HWM" $((100 * 1024))) ($(mb "$RSS_HWM") MB) |"
	echo
	echo "raw SQL: pgbench -c $CONNS -j $THREADS -M prepared, the minimal statement for the same rows (bench/README.md);"
	echo "PostGraphile over a view of the same table with the same 9 public fields; p50/p99 from wrk's latency"
	echo "distribution and pgbench's --log transaction logs."
} >"$OUT/results.md"
cp "$WORK"/raw/* "$OUT/" 2>/dev/null || true
cp "$WORK/rawsql/list_page1.sql" "$OUT/raw-list.sql"
cp "$WORK/rawsql/device.sql" "$OUT/raw-device.sql"
echo
cat "$OUT/results.md"
log "written to $OUT/results.md"
