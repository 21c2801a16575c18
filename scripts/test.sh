#!/usr/bin/env bash
# Runs every check and test of the workspace against real peers on 127.0.0.1.
#
# On a fresh Debian machine it installs what the tests need (apt and PyPI packages), starts the
# test servers (scripts/peers/*.sh), then runs formatting, lint, feature-isolation checks and
# `cargo test` for the whole workspace. A test whose peer is missing fails here (it would only
# skip in a plain `cargo test`).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

export DEST_STATE=${DEST_STATE:-$root/.tmp/peers}
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
mkdir -p "$DEST_STATE"
: > "$DEST_STATE/env"

step() { printf '\n==> %s\n' "$*"; }

step "system packages"
# openssl: the HTTP destination's TLS test serves a self-signed certificate with it.
if ! command -v openssl >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq openssl
fi
echo "ok"

step "starting test peers"
for peer in scripts/peers/*.sh; do
  [ -e "$peer" ] || continue
  echo "-- $peer"
  bash "$peer" start
done
# shellcheck disable=SC1091
source "$DEST_STATE/env"
export DESTINATIONS_REQUIRE_PEERS=1

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc -q --workspace --all-features --no-deps
echo "ok"

step "feature isolation: the s3-only build pulls in no other destination"
tree=$(cargo tree -p destinations --no-default-features --features s3 -e normal --prefix none)
for other in destination-http destination-sql destination-email destination-snowflake \
  destination-sse sqlx lettre odbc-api; do
  if grep -q "^$other v" <<<"$tree"; then
    echo "error: the s3-only build depends on $other" >&2
    exit 1
  fi
done
cargo check -q -p destinations --no-default-features --features s3
cargo check -q -p destinations --no-default-features
echo "ok"

step "cargo test"
cargo test --workspace --all-features --no-fail-fast
