#!/usr/bin/env bash
# Kick-off load, in one run: the same load straight at a fast local fake upstream, then through the
# gateway (durable SQLite job store) in front of it. Prints both rates, their ratio, p50/p99 at
# saturation and at a fixed 200 kick-offs a second, and the crash window (EHR answer to durable record).
#
#   bash benches/load.sh            # needs `oha` (cargo install oha --locked)
#   DURATION=20s CONNECTIONS=64 bash benches/load.sh
#   STORE_URL=postgres://postgres@127.0.0.1:5432/fhirgate_load bash benches/load.sh   # PostgreSQL store
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
UPSTREAM_PORT=${UPSTREAM_PORT:-18090}
GATEWAY_PORT=${GATEWAY_PORT:-18091}
command -v oha >/dev/null || { echo "oha is needed: cargo install oha --locked" >&2; exit 1; }

cargo build --release --quiet --bin fhirgate --example fake_upstream
work=$(mktemp -d)
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
pids=()
trap cleanup EXIT

cat > "$work/fhirgate.toml" <<TOML
[server]
listen = "127.0.0.1:$GATEWAY_PORT"
public_url = "http://127.0.0.1:$GATEWAY_PORT"
[store]
url = "${STORE_URL:-sqlite://$work/jobs.db}"
max_connections = 16
[log]
level = "warn"
[[destinations]]
slug = "load"
name = "Fake upstream"
vendor = "bulk-data"
[destinations.environments.Production]
base_url = "http://127.0.0.1:$UPSTREAM_PORT/fhir"
allow_private_addresses = true
TOML

target/release/examples/fake_upstream "127.0.0.1:$UPSTREAM_PORT" & pids+=($!)
target/release/fhirgate serve --config "$work/fhirgate.toml" 2>"$work/gateway.log" & pids+=($!)
for _ in $(seq 1 50); do
    curl -fs "http://127.0.0.1:$GATEWAY_PORT/readyz" >/dev/null && break
    sleep 0.1
done

envelope='{"Meta":{"DataModel":"FHIR Bulk Data Access","EventType":"group-export","Source":{"ID":"7ce6f387-c33c-417d-8682-81e83628cbd9","Name":"load"}},"id":"example-group-id","_type":"Patient,Observation","_since":"2024-01-01T00:00:00Z"}'
upstream_url="http://127.0.0.1:$UPSTREAM_PORT/fhir/Group/example-group-id/\$export?_type=Patient,Observation&_since=2024-01-01T00:00:00Z"
gateway_url="http://127.0.0.1:$GATEWAY_PORT/fhir/R4/load/Production/Group/example-group-id/\$export"

# Envelopes carry no Log ID, so every request is a new job: a real upstream call and two durable writes.
upstream() { oha --no-tui --output-format json -z "$DURATION" "$@" -H 'Prefer: respond-async' "$upstream_url"; }
gateway() { oha --no-tui --output-format json -z "$DURATION" "$@" -m POST -T application/json -d "$envelope" "$gateway_url"; }
summary() { python3 -c '
import json, sys
d = json.load(sys.stdin)
codes = d.get("statusCodeDistribution", {})
p = d["latencyPercentiles"]
print(json.dumps({"rps": round(d["summary"]["requestsPerSec"], 1), "p50_ms": round(p["p50"] * 1000, 3),
                  "p99_ms": round(p["p99"] * 1000, 3), "status": codes}))'; }

echo "saturation, $CONNECTIONS connections, $DURATION each"
up_sat=$(upstream -c "$CONNECTIONS" | summary); echo "  upstream alone : $up_sat"
gw_sat=$(gateway -c "$CONNECTIONS" | summary);  echo "  through gateway: $gw_sat"
echo "fixed rate, 200 kick-offs/s, $DURATION each"
up_200=$(upstream -c 8 -q 200 | summary); echo "  upstream alone : $up_200"
gw_200=$(gateway -c 8 -q 200 | summary);  echo "  through gateway: $gw_200"
python3 - "$up_sat" "$gw_sat" "$up_200" "$gw_200" <<'PY'
import json, sys
us, gs, u2, g2 = (json.loads(a) for a in sys.argv[1:])
print(f"gateway/upstream rate at saturation: {gs['rps'] / us['rps']:.2f} (target >= 0.33)")
print(f"added p99 at 200/s: {g2['p99_ms'] - u2['p99_ms']:.3f} ms (target < 2 ms)")
PY

# The crash window: how long each accepted kick-off's EHR answer waited for its durable record (a crash
# inside it leaves the job kickoff-unknown), from the gateway's own histogram over the runs above.
curl -fs "http://127.0.0.1:$GATEWAY_PORT/metrics" | python3 -c '
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
    print(f"kick-off record window over {int(count)} kick-offs: p50 <= {quantile(0.5) * 1000:g} ms, "
          f"p99 <= {quantile(0.99) * 1000:g} ms, max <= {quantile(1.0) * 1000:g} ms")
'

# Status polls of a completed job: the stored manifest, no upstream call.
location=$(curl -fs -D - -o /dev/null -X POST -H 'Content-Type: application/json' -d "$envelope" "$gateway_url" |
    tr -d '\r' | awk 'tolower($1)=="content-location:"{print $2}')
curl -fs "$location" >/dev/null
status=$(oha --no-tui --output-format json -z "$DURATION" -c "$CONNECTIONS" "$location" | summary)
echo "status polls served from the store: $status"
