#!/usr/bin/env bash
# Runs once, when the postgres volume is first initialised (docker-entrypoint-initdb.d).
# Creates two roles and two databases, each role owning its own database only:
#   $DAGSTER_PG_USER / $DAGSTER_PG_DB   Dagster's run, event and schedule storage
#   $QUANT_PG_USER   / $QUANT_PG_DB     platform metadata (migrations/postgres, POSTGRES_URL)
# Passwords come from the environment and are passed to psql as variables, never spliced into
# the SQL text unquoted.
set -euo pipefail

: "${DAGSTER_PG_USER:?}" "${DAGSTER_PG_PASSWORD:?}" "${DAGSTER_PG_DB:?}"
: "${QUANT_PG_USER:?}" "${QUANT_PG_PASSWORD:?}" "${QUANT_PG_DB:?}"

create() {
    local user="$1" password="$2" db="$3"
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
        -v user="$user" -v password="$password" -v db="$db" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'user', :'password')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'user') \gexec
SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', :'user', :'password') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'user')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'db') \gexec
SQL
    echo "init.sh: database $db owned by role $user"
}

create "$DAGSTER_PG_USER" "$DAGSTER_PG_PASSWORD" "$DAGSTER_PG_DB"
create "$QUANT_PG_USER" "$QUANT_PG_PASSWORD" "$QUANT_PG_DB"
