#!/usr/bin/env bash
# Applies db/migrations/NNN_*.sql in order, each once, recorded in schema_version.
# Usage: deploy/migrate.sh [DATABASE_URL]   (default postgresql:///haca)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
url=${1:-postgresql:///haca}
q() { psql "$url" -v ON_ERROR_STOP=1 -qAtX "$@"; }
q -c "create table if not exists schema_version (version int primary key, name text not null, applied_at timestamptz not null default now())"
for f in "$here"/db/migrations/[0-9]*.sql; do
  name=$(basename "$f")
  version=$((10#${name%%_*}))
  if [ "$(q -c "select 1 from schema_version where version = $version")" != 1 ]; then
    printf '[migrate] %s: applying %s\n' "$url" "$name" >&2
    q -1 -f "$f" -c "insert into schema_version (version, name) values ($version, '$name')"
  fi
done
