#!/usr/bin/env bash
# bench.sh runs the benchmarks against real services, as test.sh runs the tests:
# PostgreSQL, a registry and buildkitd in a temporary state folder on free ports,
# stopped and deleted at the end. It runs every Go benchmark (go test -bench),
# then test/cmd/slipbench: webhook intake and pickup latency (see its doc),
# which ends with one table of every figure, the Go benchmarks' too, beside
# its baseline measured in the same run and its target.
#
#   BENCHFLAGS      extra go test flags for the Go benchmarks
#   SLIPWAY_PG_OPTIONS  PostgreSQL server options (default: durable commits)
#   SLIPBENCHFLAGS  flags for slipbench, e.g. "-deliveries 10000 -clients 32"
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
command -v go >/dev/null 2>&1 || export PATH=$PATH:/usr/local/go/bin

# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
# Durable commits by default, as in production: the intake figures include the
# WAL flush. SLIPWAY_PG_OPTIONS replaces the server options, e.g. with
# "-c max_connections=300 -c synchronous_commit=off" to see the cost of it.
throwaway_services bench "${SLIPWAY_PG_OPTIONS:--c max_connections=300}"

# The Go benchmarks' output is kept for slipbench's closing table.
# shellcheck disable=SC2086
go test -run '^$' -bench . -benchtime ${BENCHTIME:-1x} ${BENCHFLAGS:-} ./... | tee "$SERVICES_STATE/gobench.txt"
# shellcheck disable=SC2086
go -C test/e2e test -run '^$' -bench . -benchtime ${BENCHTIME:-1x} ${BENCHFLAGS:-} ./... | tee -a "$SERVICES_STATE/gobench.txt"
# shellcheck disable=SC2086
go run ./test/cmd/slipbench -gobench "$SERVICES_STATE/gobench.txt" ${SLIPBENCHFLAGS:-}
