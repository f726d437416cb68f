#!/usr/bin/env bash
# bench.sh runs the benchmarks against real services, as test.sh runs the tests:
# PostgreSQL, a registry and buildkitd in a temporary state folder on free ports,
# stopped and deleted at the end. It runs every Go benchmark (go test -bench),
# then test/cmd/slipbench: webhook intake and pickup latency (see its doc).
#
#   BENCHFLAGS      extra go test flags for the Go benchmarks
#   SLIPWAY_PG_OPTIONS  PostgreSQL server options (default: durable commits)
#   SLIPBENCHFLAGS  flags for slipbench, e.g. "-deliveries 10000 -clients 32"
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
command -v go >/dev/null 2>&1 || export PATH=$PATH:/usr/local/go/bin

state=$(mktemp -d "${TMPDIR:-/tmp}/slipway-bench.XXXXXX")
finish() {
	local rc=$?
	trap - EXIT
	trap '' INT TERM PIPE
	bash scripts/services.sh purge "$state" || true
	exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Durable commits by default, as in production: the intake figures include the
# WAL flush. SLIPWAY_PG_OPTIONS replaces the server options, e.g. with
# "-c max_connections=300 -c synchronous_commit=off" to see the cost of it.
SLIPWAY_PG_PORT=0 SLIPWAY_REGISTRY_PORT=0 \
	SLIPWAY_PG_OPTIONS="${SLIPWAY_PG_OPTIONS:--c max_connections=300}" \
	bash scripts/services.sh start "$state"
set -a
# shellcheck source=/dev/null
source "$state/env"
set +a

# shellcheck disable=SC2086
go test -run '^$' -bench . -benchtime ${BENCHTIME:-1x} ${BENCHFLAGS:-} ./...
# shellcheck disable=SC2086
go run ./test/cmd/slipbench ${SLIPBENCHFLAGS:-}
