#!/usr/bin/env bash
# The audit-log tests (tests/test_audit.py) need PostgreSQL on 127.0.0.1:5432, user postgres without a
# password (trust on loopback); each run creates and drops its own database. Already reachable: one
# line and done. Otherwise, as root on Debian: install the postgresql package if missing, create a
# cluster if there is none, allow trust auth on loopback and start it with pg_ctlcluster.
# DF_TEST_POSTGRES (an admin URL) points the tests at another server instead; then nothing is done here.
set -euo pipefail

if [ -n "${DF_TEST_POSTGRES:-}" ]; then
  echo "ensure_services: PostgreSQL from DF_TEST_POSTGRES"
  exit 0
fi

pg_up() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
pg_login() { command -v psql >/dev/null && psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -w -Atqc 'select 1' >/dev/null 2>&1; }

if pg_up && { pg_login || ! command -v psql >/dev/null; }; then
  # Without psql (a server in a container, say) an open port is all that can be checked here.
  echo "ensure_services: PostgreSQL up on 127.0.0.1:5432"
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "ensure_services: PostgreSQL not usable on 127.0.0.1:5432 (user postgres, trust) and not root;" \
       "start one by hand or set DF_TEST_POSTGRES" >&2
  exit 1
fi

if ! command -v pg_ctlcluster >/dev/null; then
  # The cluster is started below with pg_ctlcluster, not by the package.
  # shellcheck source=tests/services/lib/apt.sh
  . "$(dirname "$0")/lib/apt.sh"
  apt_install_no_start postgresql
fi

if pg_up && ! pg_lsclusters -h 2>/dev/null | awk '$3 == 5432 {f=1} END {exit !f}'; then
  echo "ensure_services: something else listens on 127.0.0.1:5432 and refuses user postgres" >&2
  exit 1
fi
# The first cluster on port 5432, or a new one.
read -r version name < <(pg_lsclusters -h | awk '$3 == 5432 {print $1, $2; exit}') || true
if [ -z "${version:-}" ]; then
  version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
  name=main
  pg_createcluster -p 5432 "$version" "$name" >/dev/null
fi

hba="/etc/postgresql/$version/$name/pg_hba.conf"
if ! grep -q '^# df-supernode tests' "$hba"; then
  # First match wins in pg_hba.conf: these lines go on top.
  { printf '# df-supernode tests: trust on loopback\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n'
    cat "$hba"; } >"$hba.new"
  mv "$hba.new" "$hba"
  chown postgres:postgres "$hba"
  echo "ensure_services: PostgreSQL $version/$name now trusts loopback connections"
fi

if pg_lsclusters -h | awk -v v="$version" -v n="$name" '$1 == v && $2 == n && $4 == "online" {f=1} END {exit !f}'; then
  pg_ctlcluster "$version" "$name" reload
else
  pg_ctlcluster "$version" "$name" start
fi
for _ in $(seq 1 100); do pg_up && pg_login && break; sleep 0.1; done
pg_login || { echo "ensure_services: PostgreSQL did not come up on 127.0.0.1:5432" >&2; exit 1; }
echo "ensure_services: PostgreSQL $version/$name up on 127.0.0.1:5432"
