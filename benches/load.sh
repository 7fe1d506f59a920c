#!/usr/bin/env bash
# Throughput in one run, against the peers issue 11 names: the fast fake upstream alone, nginx (one
# worker, keep-alive upstream) proxying to it, and the gateway in front of it (SQLite store with
# synchronous=FULL and the message log on; PostgreSQL too when FHIRGATE_BENCH_POSTGRES_URL is set).
# Prints every figure and each ratio against its target:
#
#   kick-offs/s at saturation, gateway / nginx           >= 0.33 (stretch 0.50); PostgreSQL >= 0.25
#   p99 at 200 kick-offs/s, gateway - nginx               <= 1 ms
#   status polls of a completed job/s, gateway / nginx    >= 0.50
#   the poller's upstream status polls/s, one replica     >= 1000
#   the crash window (EHR answer to durable record), from the gateway's own histogram
#
#   bash benches/load.sh
#   DURATION=20s RATE_DURATION=60s CONNECTIONS=64 ROUNDS=5 bash benches/load.sh
#   FHIRGATE_BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres bash benches/load.sh
#
# Finds oha on PATH or in target/bench-tools, else installs it there from crates.io
# (cargo install oha --locked); finds nginx, else installs Debian's nginx-light.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
# The fixed-rate runs go longer: at 200/s, 10 s is 2,000 kick-offs and its p99 the 20th slowest.
RATE_DURATION=${RATE_DURATION:-30s}
# Each comparison runs in ROUNDS rounds, the peers taking turns within a round, and each figure is the
# median of its rounds: this shared machine's speed drifts by a fifth within minutes, and a one-off
# stall lands in one round, not in the figure.
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-32}
UPSTREAM_PORT=${UPSTREAM_PORT:-18090}
GATEWAY_PORT=${GATEWAY_PORT:-18091}
NGINX_PORT=${NGINX_PORT:-18092}
PG_GATEWAY_PORT=${PG_GATEWAY_PORT:-18093}
POLL_JOBS=${POLL_JOBS:-20000}

# --- tools -----------------------------------------------------------------------------------------
tools="$PWD/target/bench-tools/bin"
export PATH="$PATH:$tools:/usr/sbin"
if ! command -v oha >/dev/null; then
    echo "oha not found: installing it into target/bench-tools (cargo install oha --locked)"
    cargo install oha --locked --quiet --root target/bench-tools
fi
# shellcheck source=benches/nginx.sh
source benches/nginx.sh
nginx_ensure

cargo build --release --quiet --bin fhirgate --example fake_upstream
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"
    # The PostgreSQL database goes too, also when a step failed.
    bench_database_drop "${db:-}"
}
# shellcheck source=benches/postgres.sh
source benches/postgres.sh
on_exit cleanup

# --- peers -----------------------------------------------------------------------------------------
target/release/examples/fake_upstream "127.0.0.1:$UPSTREAM_PORT" & pids+=($!)

nginx_start "$work/nginx" "$NGINX_PORT" "$UPSTREAM_PORT"; pids+=("$nginx_pid")

gateway_config() { # port store worker-enabled
    cat <<TOML
[server]
listen = "127.0.0.1:$1"
public_url = "http://127.0.0.1:$1"
[store]
url = "$2"
max_connections = 16
[log]
level = "warn"
[worker]
enabled = $3
[[destinations]]
slug = "load"
name = "Fake upstream"
vendor = "bulk-data"
[destinations.environments.Production]
discover = false
base_url = "http://127.0.0.1:$UPSTREAM_PORT/fhir"
allow_private_addresses = true
TOML
}

start_gateway() { # name port store worker-enabled
    gateway_config "$2" "$3" "$4" > "$work/$1.toml"
    target/release/fhirgate serve --config "$work/$1.toml" 2>>"$work/$1.log" & pids+=($!)
    gateway_pid=$!
    for _ in $(seq 1 100); do
        curl -fs "http://127.0.0.1:$2/readyz" >/dev/null && return 0
        sleep 0.1
    done
    echo "the gateway ($1) did not start:" >&2; cat "$work/$1.log" >&2; exit 1
}

wait_for() { for _ in $(seq 1 100); do curl -fso /dev/null "$1" && return 0; sleep 0.1; done; }
wait_for "http://127.0.0.1:$UPSTREAM_PORT/bulk-export/jobs/1"
wait_for "http://127.0.0.1:$NGINX_PORT/bulk-export/jobs/1"
start_gateway sqlite "$GATEWAY_PORT" "sqlite://$work/jobs.db" false
sqlite_pid=$gateway_pid

envelope='{"Meta":{"DataModel":"FHIR Bulk Data Access","EventType":"group-export","Source":{"ID":"7ce6f387-c33c-417d-8682-81e83628cbd9","Name":"load"}},"id":"example-group-id","_type":"Patient,Observation","_since":"2024-01-01T00:00:00Z"}'
query='_type=Patient,Observation&_since=2024-01-01T00:00:00Z'
upstream_kickoff="http://127.0.0.1:$UPSTREAM_PORT/fhir/Group/example-group-id/\$export?$query"
nginx_kickoff="http://127.0.0.1:$NGINX_PORT/fhir/Group/example-group-id/\$export?$query"
gateway_kickoff() { echo "http://127.0.0.1:$1/fhir/R4/load/Production/Group/example-group-id/\$export"; }

# Envelopes carry no Log ID, so every gateway request is a new job: a real upstream call, two durable
# writes (the reservation, then the EHR's answer) and a message-log record.
get() { oha --no-tui --output-format json -z "$DURATION" "$@" -H 'Prefer: respond-async'; }
post() { oha --no-tui --output-format json -z "$DURATION" "$@" -m POST -T application/json -d "$envelope"; }
get_rate() { DURATION=$RATE_DURATION get "$@"; }
post_rate() { DURATION=$RATE_DURATION post "$@"; }
summary() { python3 -c '
import json, sys
d = json.load(sys.stdin)
p = d["latencyPercentiles"]
print(json.dumps({"rps": round(d["summary"]["requestsPerSec"], 1), "p50_ms": round(p["p50"] * 1000, 3),
                  "p99_ms": round(p["p99"] * 1000, 3), "status": d.get("statusCodeDistribution", {})}))'; }
# The median of the summaries on standard input (one per line), by `key`.
median() { python3 -c '
import json, sys
runs = sorted((json.loads(l) for l in sys.stdin if l.strip()), key=lambda r: r[sys.argv[1]])
print(json.dumps(runs[len(runs) // 2]))' "$1"; }

# Where a round's time went, for the gateway at saturation: its CPU per kick-off (all its threads, and
# the store writer's thread alone), the share of the machine's cores left idle, and its threads'
# context switches per kick-off. A gateway short of CPU leaves none idle; one that waits (for the disk,
# or for a core between its threads' hand-offs) leaves some, and then more connections, not less work,
# would raise its rate. A hand-off that finds the other thread asleep is a context switch (and a
# wake-up); one that finds it at work is none.
cpu_snapshot() { # pid: "process-ticks writer-ticks idle-ticks total-ticks context-switches"
    local writer=0 switches=0 t
    for t in /proc/"$1"/task/*; do
        if [ "$(cat "$t/comm" 2>/dev/null)" = store-writer ]; then writer=$(awk '{print $14 + $15}' "$t/stat"); fi
        switches=$((switches + $(awk '/ctxt_switches/ {s += $2} END {print s + 0}' "$t/status" 2>/dev/null || echo 0)))
    done
    echo "$(awk '{print $14 + $15}' "/proc/$1/stat") $writer $(awk '/^cpu /{print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat) $switches"
}
# cpu_profile BEFORE AFTER SUMMARY: the round's figures as JSON.
cpu_profile() { python3 -c '
import json, os, sys
b, a = ([int(x) for x in s.split()] for s in sys.argv[1:3])
n = sum(json.loads(sys.argv[3])["status"].values()) or 1
tick = 1e6 / os.sysconf("SC_CLK_TCK")
print(json.dumps({"cpu_us": round((a[0] - b[0]) * tick / n, 1), "writer_us": round((a[1] - b[1]) * tick / n, 1),
                  "idle": round((a[2] - b[2]) / max(a[3] - b[3], 1), 3),
                  "switches": round((a[4] - b[4]) / n, 2)}))' "$@"; }

# The disk's own durable-write latency: every kick-off waits for two (the reservation, then the EHR's
# answer), so it sets a floor under the gateway's latency that nginx does not have.
python3 - "$work" <<'PY'
import os, sys, time
path = os.path.join(sys.argv[1], "fsync-probe")
fd = os.open(path, os.O_WRONLY | os.O_CREAT)
took = []
for _ in range(500):
    os.write(fd, b"x" * 4096)
    t = time.perf_counter(); os.fsync(fd); took.append(time.perf_counter() - t)
os.close(fd); os.unlink(path)
took.sort()
print(f"== the store's disk: fsync p50 {took[250] * 1000:.3f} ms, p99 {took[495] * 1000:.3f} ms (two per kick-off)")
PY

echo "== kick-offs at saturation, $CONNECTIONS connections, $DURATION each, $ROUNDS rounds"
up_runs=""; ng_runs=""; gw_runs=""; gw_cpu=""
for round in $(seq 1 "$ROUNDS"); do
    r=$(get -c "$CONNECTIONS" "$upstream_kickoff" | summary);   up_runs+="$r"$'\n'; echo "  $round upstream alone   : $r"
    r=$(get -c "$CONNECTIONS" "$nginx_kickoff" | summary);      ng_runs+="$r"$'\n'; echo "  $round nginx proxy      : $r"
    before=$(cpu_snapshot "$sqlite_pid")
    r=$(post -c "$CONNECTIONS" "$(gateway_kickoff "$GATEWAY_PORT")" | summary); gw_runs+="$r"$'\n'; echo "  $round gateway, SQLite  : $r"
    c=$(cpu_profile "$before" "$(cpu_snapshot "$sqlite_pid")" "$r"); gw_cpu+="$c"$'\n'; echo "    its CPU per kick-off: $c"
done
gw_cpu=$(printf '%s' "$gw_cpu" | median cpu_us)
up_sat=$(printf '%s' "$up_runs" | median rps)
ng_sat=$(printf '%s' "$ng_runs" | median rps)
gw_sat=$(printf '%s' "$gw_runs" | median rps)
echo "  medians: upstream alone $up_sat"
echo "           nginx proxy    $ng_sat"
echo "           gateway        $gw_sat"
echo "           its CPU        $gw_cpu (cpu_us: all its threads, writer_us: the store writer; idle: the cores' share left idle;"
echo "                          switches: its threads' context switches a kick-off, voluntary and not)"
# The fixed rate measures a steady 200/s, not the tail of the saturation run: let the kernel write
# back what that run left dirty (tens of thousands of jobs) before it starts.
sync; sleep 3
echo "== kick-offs at a fixed 200/s, $RATE_DURATION each, $ROUNDS rounds"
ng_runs=""; gw_runs=""
for round in $(seq 1 "$ROUNDS"); do
    r=$(get_rate -c 8 -q 200 "$nginx_kickoff" | summary);       ng_runs+="$r"$'\n'; echo "  $round nginx proxy      : $r"
    r=$(post_rate -c 8 -q 200 "$(gateway_kickoff "$GATEWAY_PORT")" | summary); gw_runs+="$r"$'\n'; echo "  $round gateway, SQLite  : $r"
done
ng_200=$(printf '%s' "$ng_runs" | median p99_ms)
gw_200=$(printf '%s' "$gw_runs" | median p99_ms)
echo "  medians (by p99): nginx $ng_200"
echo "                    gateway $gw_200"

# The crash window: how long each accepted kick-off's EHR answer waited for its durable record.
window=$(curl -fs "http://127.0.0.1:$GATEWAY_PORT/metrics" | python3 -c '
import sys
buckets, count = [], 0
for line in sys.stdin:
    if line.startswith("fhirgate_kickoff_unrecorded_window_seconds_bucket"):
        le = line.split("le=\"")[1].split("\"")[0]
        buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
    elif line.startswith("fhirgate_kickoff_unrecorded_window_seconds_count"):
        count = float(line.split()[-1])
def quantile(q):
    for le, n in buckets:
        if n >= q * count:
            return le
if count:
    print(f"over {int(count)} kick-offs: p50 <= {quantile(0.5) * 1000:g} ms, p99 <= {quantile(0.99) * 1000:g} ms, max <= {quantile(1.0) * 1000:g} ms")
')
echo "== crash window (EHR answer to durable record) $window"

echo "== status polls of a completed job, $CONNECTIONS connections, $DURATION each, $ROUNDS rounds"
location=$(curl -fs -D - -o /dev/null -X POST -H 'Content-Type: application/json' -d "$envelope" \
    "$(gateway_kickoff "$GATEWAY_PORT")" | tr -d '\r' | awk 'tolower($1)=="content-location:"{print $2}')
curl -fso /dev/null "$location"
ng_runs=""; gw_runs=""
for round in $(seq 1 "$ROUNDS"); do
    r=$(get -c "$CONNECTIONS" "http://127.0.0.1:$NGINX_PORT/bulk-export/jobs/1" | summary); ng_runs+="$r"$'\n'; echo "  $round nginx proxy      : $r"
    r=$(get -c "$CONNECTIONS" "$location" | summary);          gw_runs+="$r"$'\n'; echo "  $round gateway (stored) : $r"
done
ng_status=$(printf '%s' "$ng_runs" | median rps)
gw_status=$(printf '%s' "$gw_runs" | median rps)
echo "  medians: nginx $ng_status"
echo "           gateway $gw_status"

# The poller: the jobs accepted above are all due; a gateway with the poller on polls each once (the
# fake upstream answers the manifest), and the store's count of accepted jobs says how fast.
echo "== the poller, one replica, draining the accepted jobs"
accepted() { curl -fs "http://127.0.0.1:$1/metrics" | awk '/^fhirgate_jobs\{state="accepted"\}/{print int($2)}'; }
kill "$sqlite_pid"; wait "$sqlite_pid" 2>/dev/null || true
start_gateway poller "$GATEWAY_PORT" "sqlite://$work/jobs.db" true
start_jobs=$(accepted "$GATEWAY_PORT")
t0=$(date +%s.%N)
sleep 5
left=$(accepted "$GATEWAY_PORT")
t1=$(date +%s.%N)
polls=$(python3 -c "print(round(($start_jobs - $left) / ($t1 - $t0), 1))")
echo "  $start_jobs accepted jobs at start, $left after $(python3 -c "print(round($t1 - $t0, 1))") s: $polls polls/s"
# It would go on polling the rest, on the cores the PostgreSQL figures need.
kill "$gateway_pid"; wait "$gateway_pid" 2>/dev/null || true

pg_line=""
if [ -n "${FHIRGATE_BENCH_POSTGRES_URL:-}" ]; then
    db=$(bench_database_create)
    pg_url="${FHIRGATE_BENCH_POSTGRES_URL%/*}/$db"
    start_gateway postgres "$PG_GATEWAY_PORT" "$pg_url" false
    # PostgreSQL shares the two cores: how much of them its own processes took during the run.
    pg_cpu() { for p in $(pgrep -x postgres); do awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null; done | awk '{s += $1} END {print s + 0}'; }
    pg_before=$(pg_cpu); t0=$(date +%s.%N)
    # Its rounds take turns with nginx too, for the ratio's nginx figure.
    pg_runs=""; pg_ng_runs=""
    for round in $(seq 1 "$ROUNDS"); do
        r=$(get -c "$CONNECTIONS" "$nginx_kickoff" | summary); pg_ng_runs+="$r"$'\n'
        echo "  $round nginx proxy      : $r"
        before=$(cpu_snapshot "$gateway_pid")
        r=$(post -c "$CONNECTIONS" "$(gateway_kickoff "$PG_GATEWAY_PORT")" | summary); pg_runs+="$r"$'\n'
        echo "  $round gateway, PostgreSQL: $r"
        echo "    its CPU per kick-off: $(cpu_profile "$before" "$(cpu_snapshot "$gateway_pid")" "$r")"
    done
    pg_sat=$(printf '%s' "$pg_runs" | median rps)
    pg_after=$(pg_cpu); t1=$(date +%s.%N)
    echo "== kick-offs at saturation, gateway on PostgreSQL (median): $pg_sat"
    # Its CPU over all the rounds, per kick-off answered in them.
    printf '%s' "$pg_runs" | python3 -c "
import json, sys
cpu = ($pg_after - $pg_before) / $(getconf CLK_TCK)
kickoffs = sum(sum(json.loads(l)['status'].values()) for l in sys.stdin if l.strip())
print(f'  PostgreSQL itself used {cpu / ($t1 - $t0):.2f} of the $(nproc) cores: {cpu * 1e6 / kickoffs:.0f} us of its CPU per kick-off')"
    kill "$gateway_pid"; wait "$gateway_pid" 2>/dev/null || true
    bench_database_drop "$db"
    pg_line=$(printf '{"pg": %s, "nginx": %s}' "$pg_sat" "$(printf '%s' "$pg_ng_runs" | median rps)")
fi

echo
echo "== ratios, this run ($(nproc) cores; $(uname -r))"
python3 - "$up_sat" "$ng_sat" "$gw_sat" "$ng_200" "$gw_200" "$ng_status" "$gw_status" "$polls" "$pg_line" "$gw_cpu" <<'PY'
import json, sys
us, ns, gs, n2, g2, nst, gst = (json.loads(a) for a in sys.argv[1:8])
polls = float(sys.argv[8])
pg = json.loads(sys.argv[9]) if sys.argv[9] else None
def line(name, value, target, ok):
    print(f"  {name:<52} {value:>10}   target {target:<14} {'met' if ok else 'NOT MET'}")
r = gs["rps"] / ns["rps"]
line("kick-offs at saturation, gateway / nginx", f"{r:.3f}", ">= 0.33 (0.50)", r >= 1 / 3)
if pg:
    rp = pg["pg"]["rps"] / pg["nginx"]["rps"]
    line("kick-offs at saturation, gateway on PostgreSQL / nginx", f"{rp:.3f}", ">= 0.25", rp >= 0.25)
added = g2["p99_ms"] - n2["p99_ms"]
line("p99 at 200 kick-offs/s, gateway - nginx (ms)", f"{added:.3f}", "<= 1 ms", added <= 1.0)
rs = gst["rps"] / nst["rps"]
line("status polls of a completed job, gateway / nginx", f"{rs:.3f}", ">= 0.50", rs >= 0.5)
line("poller upstream polls/s, one replica", f"{polls:.0f}", ">= 1000", polls >= 1000)
print(f"  (nginx / upstream alone at saturation: {ns['rps'] / us['rps']:.3f})")
cpu = json.loads(sys.argv[10])
print(f"  (the gateway at saturation, median round: {cpu['cpu_us']:.0f} us of CPU a kick-off, the store writer"
      f" {cpu['writer_us']:.0f} of them; {cpu['idle'] * 100:.0f}% of the cores idle;"
      f" {cpu['switches']:.1f} context switches of its threads a kick-off)")
PY
