#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers at 127.0.0.1:5432 with the test database the PostgreSQL
# tests use (FHIRSIDE_TEST_POSTGRES, default postgres://root@127.0.0.1:5432/test). Development and
# CI machines normally run one already; otherwise this installs Debian's, starts it, and gives
# local connections from 127.0.0.1 a superuser `root` and a database `test` without a password.
set -euo pipefail

ready() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }

if ! ready; then
  if ! command -v pg_ctlcluster >/dev/null; then
    apt-get update && apt-get install -y postgresql
  fi
  version=$(ls /etc/postgresql | sort -V | tail -1)
  hba=/etc/postgresql/$version/main/pg_hba.conf
  if ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
    sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
  fi
  pg_ctlcluster "$version" main start || pg_ctlcluster "$version" main reload
  for _ in $(seq 1 30); do ready && break; sleep 1; done
  ready || { echo "error: PostgreSQL did not start" >&2; exit 1; }
fi

command -v psql >/dev/null || { apt-get update && apt-get install -y postgresql-client; }

# The role and database the tests connect as, when the server lacks them.
if [ -z "${FHIRSIDE_TEST_POSTGRES:-}" ]; then
  if ! psql -h 127.0.0.1 -U root -d test -Atc 'SELECT 1' >/dev/null 2>&1; then
    su postgres -c "psql -h 127.0.0.1 -Atc \"DO \\\$\\\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'root') THEN CREATE ROLE root SUPERUSER LOGIN; END IF; END \\\$\\\$\"" \
      || psql -h 127.0.0.1 -U postgres -Atc "CREATE ROLE root SUPERUSER LOGIN" || true
    psql -h 127.0.0.1 -U root -d postgres -Atc "CREATE DATABASE test" >/dev/null 2>&1 || true
  fi
  psql -h 127.0.0.1 -U root -d test -Atc 'SELECT 1' >/dev/null
fi
echo "PostgreSQL ready at 127.0.0.1:5432"
