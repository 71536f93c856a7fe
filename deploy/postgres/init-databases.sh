#!/bin/sh
# One database and one login role per service (ARCHITECTURE: no service reads another's tables).
# The postgres image runs this once, on the first start of an empty data volume; to change a
# password later, ALTER ROLE by hand (or drop the volume in a throwaway set-up).
set -eu

create() {
    db="$1"
    password="$2"
    if [ -z "$password" ]; then
        echo "init-databases: the password for $db is empty; set it in deploy/compose.env" >&2
        exit 1
    fi
    # psql variables (:'pw', :"db") quote the values, so a password never becomes SQL.
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
        -v db="$db" -v pw="$password" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'db', :'pw')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'db') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'db')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
SQL
    echo "init-databases: $db ready"
}

create dante_auth "${DANTE_AUTH_DB_PASSWORD:-}"
create dante_registry "${DANTE_REGISTRY_DB_PASSWORD:-}"
create dante_scheduler "${DANTE_SCHEDULER_DB_PASSWORD:-}"
create dante_billing "${DANTE_BILLING_DB_PASSWORD:-}"
