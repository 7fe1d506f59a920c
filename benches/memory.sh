#!/usr/bin/env bash
# Memory under hostile input: a fresh gateway (release build, SQLite store, the fake upstream as its EHR,
# a source with keys so the token endpoint and bearer checks run), then rounds of hostile traffic from
# examples/hostile.rs, printing the gateway's RSS after each round. Target: round 5 within 10% of round 2.
#
#   bash benches/memory.sh [rounds] [requests per round]     # defaults: 5 rounds of 110,000
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
PER_ROUND=${2:-110000}
UPSTREAM_PORT=${UPSTREAM_PORT:-18290}
GATEWAY_PORT=${GATEWAY_PORT:-18291}

cargo build --release --quiet --bin fhirgate --example fake_upstream --example hostile
work=$(mktemp -d)
KEY="hostile-bench-partner-key-$RANDOM$RANDOM"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# A P-384 public key the source "registers"; no assertion sent here is signed by it.
cat > "$work/jwks.json" <<'JSON'
{"keys":[{"kty":"EC","crv":"P-384","kid":"k1","alg":"ES384","use":"sig",
 "x":"iA7lWQLzVrKGEFjfGMfMHfTEZ2KnLiKU7JuNT3E7ygsfE7ygAGHRk8O6Qpbmg9rw",
 "y":"cFtZz4eRF6nHbjvGKDSf3YCtCRhk8Rk1cTPHHZgw8T9DWUBuhLTJPnubqNVMWQJp"}]}
JSON
cat > "$work/fhirgate.toml" <<TOML
[server]
listen = "127.0.0.1:$GATEWAY_PORT"
public_url = "http://127.0.0.1:$GATEWAY_PORT"
[store]
url = "sqlite://$work/jobs.db"
[log]
level = "error"
[auth]
token_rate_limit_per_minute = 120
[[sources]]
id = "7ce6f387-c33c-417d-8682-81e83628cbd9"
name = "Hostile partner"
jwks_file = "$work/jwks.json"
api_key_sha256 = "$(printf '%s' "$KEY" | sha256sum | cut -d' ' -f1)"
destinations = ["bench"]
rate_limit_per_minute = 0
[[destinations]]
slug = "bench"
name = "Fake upstream"
vendor = "bulk-data"
[destinations.environments.Production]
base_url = "http://127.0.0.1:$UPSTREAM_PORT/fhir"
allow_private_addresses = true
discover = false
TOML

target/release/examples/fake_upstream "127.0.0.1:$UPSTREAM_PORT" & pids+=($!)
target/release/fhirgate serve --config "$work/fhirgate.toml" 2>"$work/gateway.log" & gateway=$!; pids+=("$gateway")
for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$GATEWAY_PORT/healthz" >/dev/null && break; sleep 0.1; done

target/release/examples/hostile "http://127.0.0.1:$GATEWAY_PORT" "$gateway" "$ROUNDS" "$PER_ROUND" "$KEY"
echo "job store on disk: $(du -sh "$work" | cut -f1)"
