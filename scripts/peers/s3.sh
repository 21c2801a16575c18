#!/usr/bin/env bash
# An S3-compatible test server (moto) on 127.0.0.1 for destination-s3's tests.
#
#   scripts/peers/s3.sh [start]   install moto if missing, start it once, export its address
#   scripts/peers/s3.sh stop      stop it
#
# State (venv, pid, log) lives in ${DEST_STATE}; `start` appends
# `export DESTINATIONS_TEST_S3_ENDPOINT=http://127.0.0.1:PORT` to ${DEST_STATE}/env, and
# `export DESTINATIONS_TEST_MOTO_SERVER=.../moto_server`: the binary, for tests that must
# kill and restart a server of their own (the shared one is used by other tests at once).
# PORT defaults to 47321 (DEST_S3_PORT overrides it).
set -euo pipefail

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
state=${DEST_STATE:-$root/.tmp/peers}
port=${DEST_S3_PORT:-47321}
venv=$state/venv
pidfile=$state/s3.pid
log=$state/s3.log
endpoint="http://127.0.0.1:$port"
moto_server=$venv/bin/moto_server

running() {
  [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

ready() {
  python3 - "$port" <<'EOF'
import socket, sys
try:
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
    s.sendall(b"GET /moto-api/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    ok = s.recv(16).startswith(b"HTTP/1.")
    s.close()
    sys.exit(0 if ok else 1)
except OSError:
    sys.exit(1)
EOF
}

stop() {
  if running; then
    kill "$(cat "$pidfile")"
    for _ in $(seq 1 50); do
      running || break
      sleep 0.1
    done
  fi
  rm -f "$pidfile"
}

install() {
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    apt-get update
    apt-get install -y python3-venv
  fi
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  if ! "$venv/bin/python" -c 'import moto.server, flask, flask_cors' 2>/dev/null; then
    "$venv/bin/pip" install --quiet "moto[server]"
  fi
}

# Appends `export NAME=VALUE` to the env file unless that exact line is there already.
export_once() {
  touch "$state/env"
  grep -qxF "export $1" "$state/env" || echo "export $1" >>"$state/env"
}

start() {
  mkdir -p "$state"
  if ! running; then
    install
    if ready; then
      echo "error: port $port is taken by another process (set DEST_S3_PORT)" >&2
      exit 1
    fi
    nohup "$moto_server" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
    echo $! >"$pidfile"
  fi
  for _ in $(seq 1 100); do
    if ready; then
      export_once "DESTINATIONS_TEST_S3_ENDPOINT=$endpoint"
      export_once "DESTINATIONS_TEST_MOTO_SERVER=$(printf %q "$moto_server")"
      echo "s3 (moto) ready at $endpoint"
      return 0
    fi
    if ! running; then
      echo "error: moto_server exited; its log ($log):" >&2
      tail -n 20 "$log" >&2 || true
      exit 1
    fi
    sleep 0.2
  done
  echo "error: moto_server did not answer on $endpoint within 20 s; log: $log" >&2
  exit 1
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *)
    echo "usage: $0 [start|stop]" >&2
    exit 2
    ;;
esac
