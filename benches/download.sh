#!/usr/bin/env bash
# File download through the gateway vs. straight from the same local upstream, in one run: throughput
# ratio (target >= 0.95), and the gateway's peak RSS after a 100 MiB and after a 1 GiB file (it must not grow with size);
# then a 1 GiB file of DocumentReferences, every one with an attachment on the EHR that the gateway
# rewrites to its own link as the file streams (target: >= 0.80 of the direct download); last, 200
# concurrent downloads of the 100 MiB file and the gateway's peak RSS after them (target < 256 MiB).
#
# Each comparison runs ROUNDS times (default 3), direct and through the gateway taking turns, and
# reports the medians: on this shared machine one transfer's speed swings by a quarter between runs.
#
#   bash benches/download.sh
set -euo pipefail
cd "$(dirname "$0")/.."
UPSTREAM_PORT=${UPSTREAM_PORT:-18190}
GATEWAY_PORT=${GATEWAY_PORT:-18191}
ROUNDS=${ROUNDS:-3}

cargo build --release --quiet --bin fhirgate --example fake_upstream
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

cat > "$work/fhirgate.toml" <<TOML
[server]
listen = "127.0.0.1:$GATEWAY_PORT"
public_url = "http://127.0.0.1:$GATEWAY_PORT"
[store]
url = "sqlite://$work/jobs.db"
[log]
level = "warn"
[[destinations]]
slug = "bench"
name = "Fake upstream"
vendor = "bulk-data"
[destinations.environments.Production]
base_url = "http://127.0.0.1:$UPSTREAM_PORT/fhir"
allow_private_addresses = true
TOML

target/release/examples/fake_upstream "127.0.0.1:$UPSTREAM_PORT" & pids+=($!)
target/release/fhirgate serve --config "$work/fhirgate.toml" 2>"$work/gateway.log" & gateway=$!; pids+=($gateway)
for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$GATEWAY_PORT/readyz" >/dev/null && break; sleep 0.1; done

location=$(curl -fs -D - -o /dev/null -X POST -H 'Content-Type: application/json' \
    -d '{"Meta":{"DataModel":"FHIR Bulk Data Access","EventType":"group-export"},"id":"g"}' \
    "http://127.0.0.1:$GATEWAY_PORT/fhir/R4/bench/Production/Group/g/\$export" | tr -d '\r' | awk 'tolower($1)=="content-location:"{print $2}')
curl -fs "$location" >/dev/null   # completes the job: the manifest is stored

peak_rss_mib() { awk '/VmHWM/{printf "%.1f", $2/1024}' "/proc/$gateway/status"; }
speed() { curl -fs -o /dev/null -w '%{speed_download}' "$1"; }
mib_s() { python3 -c "print(round($1/1048576, 1))"; }
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
# compare NAME DIRECT_URL THROUGH_URL: ROUNDS turns of each, the direct one first in odd rounds, the
# gateway first in even ones; sets $direct and $through to the medians and prints every round.
compare() {
    local ds=() ts=() d t
    for round in $(seq 1 "$ROUNDS"); do
        if [ $((round % 2)) = 1 ]; then d=$(speed "$2"); t=$(speed "$3"); else t=$(speed "$3"); d=$(speed "$2"); fi
        ds+=("$d"); ts+=("$t")
        echo "  $1, round $round: direct $(mib_s "$d") MiB/s, through the gateway $(mib_s "$t") MiB/s"
    done
    direct=$(median "${ds[@]}"); through=$(median "${ts[@]}")
}

echo "gateway peak RSS before downloads: $(peak_rss_mib) MiB"
for n in 0 1; do
    size=$([ "$n" = 0 ] && echo "100 MiB" || echo "1 GiB")
    bytes=$([ "$n" = 0 ] && echo $((100 * 1048576)) || echo $((1024 * 1048576)))
    compare "$size" "http://127.0.0.1:$UPSTREAM_PORT/files/$bytes" "${location/export-status/export-file}/$n"
    echo "$size, medians of $ROUNDS rounds: direct $(mib_s "$direct") MiB/s, through gateway $(mib_s "$through") MiB/s," \
         "ratio $(python3 -c "print(round($through/$direct, 2))") (target >= 0.95); gateway peak RSS $(peak_rss_mib) MiB (target < 64)"
done
bytes=$((1024 * 1048576))
compare "1 GiB of DocumentReferences" "http://127.0.0.1:$UPSTREAM_PORT/documents/$bytes" "${location/export-status/export-file}/2"
echo "1 GiB of DocumentReferences, attachments rewritten, medians of $ROUNDS rounds: direct $(mib_s "$direct") MiB/s, through gateway $(mib_s "$through") MiB/s," \
     "ratio $(python3 -c "print(round($through/$direct, 2))") (target >= 0.80); gateway peak RSS $(peak_rss_mib) MiB (target < 64)"
plain=$(speed "${location/export-status/export-file}/1")
echo "  the rewrite's own cost: the same gateway streams the 1 GiB Observation file (no rewrite) at $(mib_s "$plain") MiB/s;" \
     "rewritten / plain = $(python3 -c "print(round($through/$plain, 2))")"

# 200 partners downloading at once (the 100 MiB file each): the gateway's memory must not grow with
# the number of downloads either (target: peak RSS < 256 MiB).
file0="${location/export-status/export-file}/0"
t0=$(date +%s.%N)
seq 1 200 | xargs -P 200 -I{} curl -fs -o /dev/null -w '%{http_code}\n' "$file0" > "$work/concurrent.txt"
t1=$(date +%s.%N)
ok=$(grep -c '^200$' "$work/concurrent.txt" || true)
echo "200 concurrent downloads of the 100 MiB file: $ok answered 200 in $(python3 -c "print(round($t1 - $t0, 1))") s" \
     "($(python3 -c "print(round(200 * 100 / ($t1 - $t0), 1))") MiB/s in all); gateway peak RSS $(peak_rss_mib) MiB (target < 256)"
[ "$ok" = 200 ] || { echo "only $ok of 200 concurrent downloads succeeded" >&2; exit 1; }
