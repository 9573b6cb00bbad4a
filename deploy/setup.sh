#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for haca, idempotently, as root:
# installs the Debian packages, starts PostgreSQL 15 (no systemd here: Debian's cluster tools),
# creates the role and database `haca` and applies db/migrations/*.sql in order, and installs
# the browser test's npm packages (tests/browser: playwright-core, no browser download; it
# drives Debian's chromium).
# Usage: deploy/setup.sh            (everything)
#        deploy/setup.sh --db-only  (skip apt; start Postgres and migrate)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
log() { printf '[setup] %s\n' "$*" >&2; }

packages=(build-essential cmake pkg-config git
  libcaf-dev libzmq3-dev cppzmq-dev libpqxx-dev postgresql libsodium-dev doctest-dev
  nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev libcpp-httplib-dev
  libtomlplusplus-dev libdnnl-dev python3-zmq python3-nacl dataset-fashion-mnist zlib1g-dev libssl-dev
  prometheus iproute2 chromium libjs-chart.js)

if [ "${1:-}" != "--db-only" ]; then
  missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  # node and npm for the browser test: Debian's, unless some node (e.g. NodeSource's, which
  # brings its own npm and conflicts with Debian's npm) is already there.
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${#missing[@]} Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    log "Debian packages: all present"
  fi
fi

# PostgreSQL 15: Debian's cluster tools, no systemd.
if ! pg_lsclusters -h 2>/dev/null | grep -q '^15 *main'; then
  log "creating PostgreSQL 15 cluster 'main'"
  pg_createcluster 15 main >/dev/null
fi
if ! pg_lsclusters -h | grep -q '^15 *main .*online'; then
  log "starting PostgreSQL 15"
  pg_ctlcluster 15 main start
fi
for _ in $(seq 1 50); do
  runuser -u postgres -- pg_isready -q && break
  sleep 0.2
done

# Role and database. Processes here run as the OS user (often root): peer authentication maps
# that user to a role of the same name, so the role for the OS user gets created too.
psql_su() { runuser -u postgres -- psql -v ON_ERROR_STOP=1 -qAtX "$@"; }
me=$(id -un)
for role in haca "$me"; do
  [ "$role" = postgres ] && continue
  if [ "$(psql_su -c "select 1 from pg_roles where rolname = '$role'")" != 1 ]; then
    log "creating role $role"
    psql_su -c "create role \"$role\" login superuser"
  fi
done
for db in haca haca_test; do
  if [ "$(psql_su -c "select 1 from pg_database where datname = '$db'")" != 1 ]; then
    log "creating database $db"
    runuser -u postgres -- createdb -O haca "$db"
  fi
  "$here/deploy/migrate.sh" "postgresql:///$db"
done
# The browser test's packages, exactly as package-lock.json pins them; again only when the lock
# file changed since the last install (npm ci deletes node_modules first).
if [ "${1:-}" != "--db-only" ]; then
  browser="$here/tests/browser"
  if ! cmp -s "$browser/package-lock.json" "$browser/node_modules/.package-lock.json.installed" 2>/dev/null; then
    log "installing the browser test's npm packages (npm ci in tests/browser)"
    (cd "$browser" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    cp "$browser/package-lock.json" "$browser/node_modules/.package-lock.json.installed"
  else
    log "browser test packages: present"
  fi
fi
log "ready: postgresql:///haca"
