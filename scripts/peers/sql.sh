#!/usr/bin/env bash
# PostgreSQL and MariaDB on 127.0.0.1 for destination-sql's tests.
#
#   scripts/peers/sql.sh [start]   install what is missing, start what is not running,
#                                  make sure of passwordless access and a `test` database
#   scripts/peers/sql.sh stop      stop the servers this script started (never others;
#                                  the private cluster is always this script's own)
#
# `start` appends to ${DEST_STATE}/env:
#   export DESTINATIONS_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:PORT/test
#   export DESTINATIONS_TEST_MYSQL_URL=mysql://root@127.0.0.1:3306/test
#   export DESTINATIONS_TEST_POSTGRES_RESTART_URL=... (and _PGCTL, _DATA): a private
#     PostgreSQL cluster under ${DEST_STATE}/pg-restart that tests may restart
# PostgreSQL's port is its cluster's; MariaDB's is DEST_MYSQL_PORT (default 3306).
set -euo pipefail

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
state=${DEST_STATE:-$root/.tmp/peers}
my_port=${DEST_MYSQL_PORT:-3306}
apt_updated=no

apt_install() {
  if [ "$apt_updated" = no ]; then
    apt-get update
    apt_updated=yes
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
}

# Waits up to $1 tenths of a second for the command after it to succeed.
wait_for() {
  local tries=$1
  shift
  for _ in $(seq 1 "$tries"); do
    if "$@" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# ===== PostgreSQL =====

pg_cluster() {
  # "version name port status" of the first cluster.
  pg_lsclusters -h 2>/dev/null | awk 'NR == 1 { print $1, $2, $3, $4 }'
}

pg_start() {
  if ! command -v pg_lsclusters >/dev/null || [ -z "$(pg_cluster)" ]; then
    apt_install postgresql
  fi
  local version name port status
  read -r version name port status <<<"$(pg_cluster)"
  if [ -z "${version:-}" ]; then
    echo "error: no PostgreSQL cluster found after installing postgresql" >&2
    exit 1
  fi
  if [ "$status" != online ]; then
    pg_ctlcluster "$version" "$name" start
    echo "$version $name" >"$state/sql-postgres.started"
  fi
  if ! wait_for 300 pg_isready -q -h 127.0.0.1 -p "$port"; then
    echo "error: PostgreSQL $version/$name did not accept connections on 127.0.0.1:$port" \
      "within 30 s; see /var/log/postgresql/postgresql-$version-$name.log" >&2
    exit 1
  fi

  # Trust local TCP connections (a throwaway test server), once.
  if ! psql -w -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc 'SELECT 1' >/dev/null 2>&1; then
    local hba
    hba=$(su postgres -c "psql -p $port -tAc 'SHOW hba_file'")
    sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
    su postgres -c "psql -p $port -tAc 'SELECT pg_reload_conf()'" >/dev/null
    wait_for 50 psql -w -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc 'SELECT 1'
  fi
  if [ "$(psql -w -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = 'test'")" != 1 ]; then
    psql -w -h 127.0.0.1 -p "$port" -U postgres -d postgres -qc 'CREATE DATABASE test'
  fi
  export_var DESTINATIONS_TEST_POSTGRES_URL "postgres://postgres@127.0.0.1:$port/test"
  echo "postgres ready at 127.0.0.1:$port"
}

pg_stop() {
  if [ -f "$state/sql-postgres.started" ]; then
    local version name
    read -r version name <"$state/sql-postgres.started"
    pg_ctlcluster "$version" "$name" stop || true
    rm -f "$state/sql-postgres.started"
  fi
}

# ===== MariaDB =====

my_tcp() {
  mariadb --protocol=tcp -h 127.0.0.1 -P "$my_port" -u root "$@"
}

my_start() {
  if [ ! -x /usr/sbin/mariadbd ]; then
    apt_install mariadb-server
  fi
  if ! mariadb-admin --protocol=tcp -h 127.0.0.1 -P "$my_port" -u root ping >/dev/null 2>&1 &&
    ! mariadb-admin -u root ping >/dev/null 2>&1; then
    install -d -o mysql -g mysql /run/mysqld
    install -o mysql -g mysql -m 640 /dev/null "$state/mariadb.err"
    start-stop-daemon --start --oknodo --background --make-pidfile \
      --pidfile "$state/sql-mariadb.pid" --exec /usr/sbin/mariadbd -- \
      --user=mysql --bind-address=127.0.0.1 --port="$my_port" --log-error="$state/mariadb.err"
    touch "$state/sql-mariadb.started"
  fi
  if ! wait_for 600 mariadb-admin -u root ping; then
    echo "error: MariaDB did not start within 60 s; its log ($state/mariadb.err):" >&2
    tail -n 20 "$state/mariadb.err" >&2 || true
    exit 1
  fi

  # Root over TCP without a password (a throwaway test server), and the test database;
  # the unix socket lets the system's root in whatever TCP allows.
  if ! my_tcp -e 'SELECT 1' >/dev/null 2>&1; then
    # Debian's root@localhost authenticates by unix socket only; TCP from 127.0.0.1 may
    # match either account, so both accept an empty password.
    mariadb -u root -e "ALTER USER 'root'@'localhost'
        IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('');
      CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
      GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
      FLUSH PRIVILEGES;"
  fi
  if ! wait_for 100 my_tcp -e 'SELECT 1'; then
    echo "error: MariaDB refuses root over TCP on 127.0.0.1:$my_port" >&2
    exit 1
  fi
  my_tcp -e 'CREATE DATABASE IF NOT EXISTS test'
  export_var DESTINATIONS_TEST_MYSQL_URL "mysql://root@127.0.0.1:$my_port/test"
  echo "mariadb ready at 127.0.0.1:$my_port"
}

my_stop() {
  if [ -f "$state/sql-mariadb.started" ]; then
    start-stop-daemon --stop --oknodo --retry 30 --pidfile "$state/sql-mariadb.pid" \
      --exec /usr/sbin/mariadbd || true
    rm -f "$state/sql-mariadb.started" "$state/sql-mariadb.pid"
  fi
}

# ===== A private PostgreSQL that tests may restart =====
# A cluster of its own under ${DEST_STATE}/pg-restart (port DEST_PG_RESTART_PORT, default
# 55433), so that a test can restart a server mid-batch without touching the shared one.

pgr_dir=$state/pg-restart
pgr_port=${DEST_PG_RESTART_PORT:-55433}

pg_bindir() {
  echo "/usr/lib/postgresql/$(pg_lsclusters -h | awk 'NR == 1 { print $1 }')/bin"
}

pgr_ctl() {
  runuser -u postgres -- "$(pg_bindir)/pg_ctl" -D "$pgr_dir/data" "$@"
}

pgr_start() {
  if [ ! -f "$pgr_dir/data/PG_VERSION" ]; then
    install -d -o postgres -g postgres "$pgr_dir"
    runuser -u postgres -- "$(pg_bindir)/initdb" -D "$pgr_dir/data" -A trust -U postgres \
      -E UTF8 --no-sync >"$pgr_dir/initdb.log"
  fi
  if ! pgr_ctl status >/dev/null 2>&1; then
    if pg_isready -q -h 127.0.0.1 -p "$pgr_port"; then
      echo "error: port $pgr_port is taken by another server (set DEST_PG_RESTART_PORT)" >&2
      exit 1
    fi
    pgr_ctl -w -t 60 -l "$pgr_dir/log" \
      -o "-p $pgr_port -c listen_addresses=127.0.0.1 -c unix_socket_directories= -c fsync=off" start >/dev/null
  fi
  if ! wait_for 300 pg_isready -q -h 127.0.0.1 -p "$pgr_port"; then
    echo "error: the private PostgreSQL did not start; its log ($pgr_dir/log):" >&2
    tail -n 20 "$pgr_dir/log" >&2 || true
    exit 1
  fi
  export_var DESTINATIONS_TEST_POSTGRES_RESTART_URL "postgres://postgres@127.0.0.1:$pgr_port/postgres"
  export_var DESTINATIONS_TEST_POSTGRES_RESTART_PGCTL "$(pg_bindir)/pg_ctl"
  export_var DESTINATIONS_TEST_POSTGRES_RESTART_DATA "$pgr_dir/data"
  echo "private postgres (restartable) ready at 127.0.0.1:$pgr_port"
}

pgr_stop() {
  if [ -f "$pgr_dir/data/PG_VERSION" ] && pgr_ctl status >/dev/null 2>&1; then
    pgr_ctl -m fast -w stop >/dev/null
  fi
}

# ===== env =====

# Sets `export NAME=VALUE` in the env file, replacing an earlier value.
export_var() {
  touch "$state/env"
  grep -v "^export $1=" "$state/env" >"$state/env.tmp" || true
  echo "export $1=$2" >>"$state/env.tmp"
  mv "$state/env.tmp" "$state/env"
}

mkdir -p "$state"
case "${1:-start}" in
  start)
    pg_start
    pgr_start
    my_start
    ;;
  stop)
    my_stop
    pgr_stop
    pg_stop
    ;;
  *)
    echo "usage: $0 [start|stop]" >&2
    exit 2
    ;;
esac
