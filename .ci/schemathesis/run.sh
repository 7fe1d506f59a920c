#!/usr/bin/env bash
# schemathesis (from PyPI) against a running gateway on the sandbox destination: no 5xx, and every
# status, content type and body conforms to /openapi.json. Then SIGTERM: the gateway must exit 0.
# The coverage phase is left out: under Python 3.11 it dies inside hypothesis (SystemError: AST
# constructor recursion depth mismatch) before sending a request, which says nothing about the gateway.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv=target/ci-venv
if [ ! -x "$venv/bin/st" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'schemathesis>=4,<5'
fi

rm -rf target/schemathesis && mkdir -p target/schemathesis
cargo build --locked --quiet --bin fhirgate
export FHIRGATE_ADMIN_KEY=schemathesis-admin-key
target/debug/fhirgate serve --config .ci/schemathesis/gateway.toml \
    >target/schemathesis/gateway.log 2>&1 &
gateway=$!
trap 'kill "$gateway" 2>/dev/null || true' EXIT

ready() {
    "$venv/bin/python" -c 'import urllib.request; urllib.request.urlopen("http://127.0.0.1:18080/readyz", timeout=2)' 2>/dev/null
}
for _ in $(seq 1 100); do
    ready && break
    sleep 0.2
done
ready || { echo "the gateway did not become ready" >&2; tail -20 target/schemathesis/gateway.log >&2; exit 1; }

"$venv/bin/st" --config-file .ci/schemathesis/schemathesis.toml run \
    http://127.0.0.1:18080/openapi.json \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance \
    --phases examples,fuzzing,stateful \
    --workers 2 \
    --max-time "${ST_MAX_TIME:-180}" \
    --report junit --report-dir target/schemathesis

kill -TERM "$gateway"
status=0
wait "$gateway" || status=$?
trap - EXIT
if [ "$status" -ne 0 ]; then
    echo "the gateway exited $status after SIGTERM" >&2
    tail -20 target/schemathesis/gateway.log >&2
    exit 1
fi
echo "schemathesis: passed; the gateway stopped cleanly"
