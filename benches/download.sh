#!/usr/bin/env bash
# File download through the gateway vs. straight from the same local upstream, in one run: throughput
# ratio (target >= 0.95), and the gateway's peak RSS after a 100 MiB and after a 1 GiB file (it must not grow with size);
# then a 1 GiB file of DocumentReferences, every one with an attachment on the EHR that the gateway
# rewrites to its own link as the file streams (target: >= 0.80 of the direct download); last, 200
# concurrent downloads of the 100 MiB file and the gateway's peak RSS after them (target < 256 MiB).
#
# Beside them, the same files through nginx (one worker, keep-alive upstream, 64 KiB proxy buffers,
# no temporary file): what a reverse proxy with no translation to do makes of the same two cores.
#
# Each comparison runs ROUNDS times (default 3), direct, nginx and the gateway taking turns in an order
# that rotates every round, and reports the medians: on this shared machine one transfer's speed swings
# by a quarter between runs. Finds nginx, else installs Debian's nginx-light.
#
#   bash benches/download.sh
set -euo pipefail
cd "$(dirname "$0")/.."
UPSTREAM_PORT=${UPSTREAM_PORT:-18190}
GATEWAY_PORT=${GATEWAY_PORT:-18191}
NGINX_PORT=${NGINX_PORT:-18192}
ROUNDS=${ROUNDS:-3}

# shellcheck source=benches/nginx.sh
source benches/nginx.sh
nginx_ensure

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
# Large bodies relayed through memory, as for the gateway (nginx's defaults, 4 KiB buffers and a
# temporary file for what the client has not taken yet, made it slower still).
nginx_start "$work/nginx" "$NGINX_PORT" "$UPSTREAM_PORT" \
    "proxy_buffers 16 64k; proxy_buffer_size 64k; proxy_max_temp_file_size 0;"; pids+=("$nginx_pid")
target/release/fhirgate serve --config "$work/fhirgate.toml" 2>"$work/gateway.log" & gateway=$!; pids+=("$gateway")
for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$GATEWAY_PORT/readyz" >/dev/null && break; sleep 0.1; done
for _ in $(seq 1 50); do curl -fso /dev/null "http://127.0.0.1:$NGINX_PORT/files/1" && break; sleep 0.1; done

location=$(curl -fs -D - -o /dev/null -X POST -H 'Content-Type: application/json' \
    -d '{"Meta":{"DataModel":"FHIR Bulk Data Access","EventType":"group-export"},"id":"g"}' \
    "http://127.0.0.1:$GATEWAY_PORT/fhir/R4/bench/Production/Group/g/\$export" | tr -d '\r' | awk 'tolower($1)=="content-location:"{print $2}')
curl -fs "$location" >/dev/null   # completes the job: the manifest is stored

peak_rss_mib() { awk '/VmHWM/{printf "%.1f", $2/1024}' "/proc/$gateway/status"; }
speed() { curl -fs -o /dev/null -w '%{speed_download}' "$1"; }
mib_s() { python3 -c "print(round($1/1048576, 1))"; }
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
ratio() { python3 -c "print(round($1/$2, 2))"; }
# compare NAME URL_PATH THROUGH_URL: ROUNDS turns of the direct download (the upstream's URL_PATH),
# nginx's (the same path through it) and the gateway's, the first of them rotating from round to
# round; sets $direct, $nginx and $through to the medians and prints every round.
compare() {
    local ds=() ns=() ts=() d n t
    for round in $(seq 1 "$ROUNDS"); do
        case $((round % 3)) in
            1) d=$(speed "http://127.0.0.1:$UPSTREAM_PORT$2"); n=$(speed "http://127.0.0.1:$NGINX_PORT$2"); t=$(speed "$3") ;;
            2) n=$(speed "http://127.0.0.1:$NGINX_PORT$2"); t=$(speed "$3"); d=$(speed "http://127.0.0.1:$UPSTREAM_PORT$2") ;;
            *) t=$(speed "$3"); d=$(speed "http://127.0.0.1:$UPSTREAM_PORT$2"); n=$(speed "http://127.0.0.1:$NGINX_PORT$2") ;;
        esac
        ds+=("$d"); ns+=("$n"); ts+=("$t")
        echo "  $1, round $round: direct $(mib_s "$d") MiB/s, nginx $(mib_s "$n") MiB/s, through the gateway $(mib_s "$t") MiB/s"
    done
    direct=$(median "${ds[@]}"); nginx=$(median "${ns[@]}"); through=$(median "${ts[@]}")
}

echo "gateway peak RSS before downloads: $(peak_rss_mib) MiB"
for n in 0 1; do
    size=$([ "$n" = 0 ] && echo "100 MiB" || echo "1 GiB")
    bytes=$([ "$n" = 0 ] && echo $((100 * 1048576)) || echo $((1024 * 1048576)))
    compare "$size" "/files/$bytes" "${location/export-status/export-file}/$n"
    echo "$size, medians of $ROUNDS rounds: direct $(mib_s "$direct") MiB/s, nginx $(mib_s "$nginx") MiB/s, through gateway $(mib_s "$through") MiB/s," \
         "ratio $(ratio "$through" "$direct") (target >= 0.95; nginx / direct $(ratio "$nginx" "$direct"), gateway / nginx $(ratio "$through" "$nginx"));" \
         "gateway peak RSS $(peak_rss_mib) MiB (target < 64)"
done
bytes=$((1024 * 1048576))
compare "1 GiB of DocumentReferences" "/documents/$bytes" "${location/export-status/export-file}/2"
echo "1 GiB of DocumentReferences, attachments rewritten, medians of $ROUNDS rounds: direct $(mib_s "$direct") MiB/s," \
     "nginx (relaying, no rewrite) $(mib_s "$nginx") MiB/s, through gateway $(mib_s "$through") MiB/s," \
     "ratio $(ratio "$through" "$direct") (target >= 0.80; gateway / nginx $(ratio "$through" "$nginx")); gateway peak RSS $(peak_rss_mib) MiB (target < 64)"
plain=$(speed "${location/export-status/export-file}/1")
echo "  the rewrite's own cost: the same gateway streams the 1 GiB Observation file (no rewrite) at $(mib_s "$plain") MiB/s;" \
     "rewritten / plain = $(ratio "$through" "$plain")"

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
