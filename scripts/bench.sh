#!/usr/bin/env bash
# Runs the benchmarks of runtime/benches against real peers on 127.0.0.1 and prints their
# tables (see BENCHMARKS.md).
#
#   scripts/bench.sh             every benchmark in runtime/benches and destination-core/benches
#   scripts/bench.sh s3 sql      only these
#
# On a fresh Debian machine it installs what the benchmarks need (the peers' packages through
# scripts/peers/*.sh, and `wrk` from apt for the HTTP ceiling), starts the peers, then runs
# `cargo bench -p PACKAGE --features full --bench NAME` for each benchmark, one at a
# time. Each benchmark is bounded (about a minute); run on an otherwise idle machine, since
# every figure is CPU-bound on two cores.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

export DEST_STATE=${DEST_STATE:-$root/.tmp/peers}
mkdir -p "$DEST_STATE"
: > "$DEST_STATE/env"

step() { printf '\n==> %s\n' "$*"; }

if [ "$#" -gt 0 ]; then
  benches=("$@")
else
  benches=()
  for file in runtime/benches/*.rs destination-core/benches/*.rs; do
    benches+=("$(basename "$file" .rs)")
  done
fi

# The package and features a benchmark is built with.
bench_args() {
  if [ -e "destination-core/benches/$1.rs" ]; then
    echo "-p destination-core --bench $1"
  else
    echo "-p destinations --features full --bench $1"
  fi
}

step "tools"
if ! command -v wrk >/dev/null; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y wrk
fi
echo "wrk: $(command -v wrk)"

step "starting peers"
for peer in scripts/peers/*.sh; do
  [ -e "$peer" ] || continue
  echo "-- $peer"
  bash "$peer" start
done
# shellcheck disable=SC1091
source "$DEST_STATE/env"
export DESTINATIONS_REQUIRE_PEERS=1

step "building benchmarks"
for bench in "${benches[@]}"; do
  # shellcheck disable=SC2046
  cargo bench $(bench_args "$bench") --no-run
done

echo
echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)," \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ); commit: $(git rev-parse --short HEAD)"
for bench in "${benches[@]}"; do
  step "cargo bench $(bench_args "$bench")"
  # shellcheck disable=SC2046
  cargo bench -q $(bench_args "$bench")
done
