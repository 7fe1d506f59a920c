# shellcheck shell=bash
# Makes a PostgreSQL server answer on 127.0.0.1:5432 and exports FHIRGATE_TEST_POSTGRES_URL for it:
# starts an installed cluster that is stopped, installs PostgreSQL from Debian where it is missing.

pg_answers() {
    psql "$1" -qAtc 'SELECT 1' >/dev/null 2>&1
}

ensure_postgres() {
    if ! command -v pg_ctlcluster >/dev/null 2>&1; then
        echo "PostgreSQL is not installed: installing it from Debian's packages"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq postgresql >/dev/null
    fi
    if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
        local version
        version=$(ls /etc/postgresql | sort -V | tail -n 1)
        echo "starting PostgreSQL $version"
        pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
        for _ in $(seq 1 30); do
            pg_isready -h 127.0.0.1 -p 5432 -q && break
            sleep 1
        done
    fi
    local url="${FHIRGATE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
    if ! pg_answers "$url"; then
        # A fresh install asks for a password over TCP: give the postgres role one, over the local socket.
        su postgres -c "psql -qc \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null
        url="postgres://postgres:postgres@127.0.0.1:5432/postgres"
    fi
    pg_answers "$url" || { echo "PostgreSQL does not answer on 127.0.0.1:5432" >&2; return 1; }
    export FHIRGATE_TEST_POSTGRES_URL="$url"
}

test_databases() {
    psql "$FHIRGATE_TEST_POSTGRES_URL" -qAtc \
        "SELECT datname FROM pg_database WHERE datname LIKE 'fhirgate\_test\_%'"
}

# Drops every test database (their connections with them); says how many there were.
drop_test_databases() {
    local db count=0
    while read -r db; do
        [ -n "$db" ] || continue
        psql "$FHIRGATE_TEST_POSTGRES_URL" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null
        count=$((count + 1))
    done < <(test_databases)
    echo "dropped $count test database(s) left on the server"
}

# The tests drop their own databases: fails, naming them, if any is left.
check_no_test_databases() {
    local left
    left=$(test_databases)
    if [ -n "$left" ]; then
        echo "the tests left these databases behind:" >&2
        echo "$left" >&2
        return 1
    fi
    echo "no test database left behind"
}
