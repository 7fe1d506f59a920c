# shellcheck shell=bash
# Sourced by the benchmarks that run on PostgreSQL (FHIRGATE_BENCH_POSTGRES_URL): each makes a
# database named fhirgate_bench_{pid} and drops it on exit (also after a failed step or a kill); a
# database a run killed with -9 could not drop goes at the next run, once that process is gone.

# Makes this run's database; prints its name.
bench_database_create() {
    local db stale pid
    while read -r stale; do
        [ -n "$stale" ] || continue
        pid=${stale##*_}
        # Left by a run whose process is gone.
        if ! kill -0 "$pid" 2>/dev/null; then
            psql "$FHIRGATE_BENCH_POSTGRES_URL" -qc "DROP DATABASE IF EXISTS $stale WITH (FORCE)" >/dev/null 2>&1 || true
        fi
    done < <(psql "$FHIRGATE_BENCH_POSTGRES_URL" -qAtc \
        "SELECT datname FROM pg_database WHERE datname ~ '^fhirgate_(bench|load|msglog)_[0-9]+$'")
    db="fhirgate_bench_$$"
    psql "$FHIRGATE_BENCH_POSTGRES_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1
    psql "$FHIRGATE_BENCH_POSTGRES_URL" -qc "CREATE DATABASE $db" >/dev/null
    echo "$db"
}

# Drops the database (its connections with it) if it is there.
bench_database_drop() {
    [ -n "${1:-}" ] || return 0
    psql "$FHIRGATE_BENCH_POSTGRES_URL" -qc "DROP DATABASE IF EXISTS $1 WITH (FORCE)" >/dev/null 2>&1 || true
}

# Runs `cleanup` on exit: also when a step fails and when the script is killed with TERM or HUP
# (bash runs the EXIT trap then), not with kill -9 (the next run drops what is left).
on_exit() {
    # shellcheck disable=SC2064 # the function's name, given now
    trap "$1" EXIT
}
