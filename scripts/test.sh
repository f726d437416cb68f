#!/usr/bin/env bash
# test.sh runs `go test ./...` against real services: PostgreSQL, a registry
# and buildkitd started in a temporary state folder on free ports (so it runs
# beside `make run`), stopped and deleted at the end whatever the outcome.
# The exit code is go test's. On failure the services' log tails are printed.
#
#   SLIPWAY_TEST_TIMEOUT  go test -timeout (default 60m)
#   GOTESTFLAGS           extra go test flags, e.g. "-run TestEndToEnd -v"
#   SLIPWAY_DEPLOY_TESTS=1  run deploy/test's chart and compose tests too when
#                         GOTESTFLAGS narrows the run (a full run always does)
#   SLIPWAY_KEEP_STATE=1  keep the state folder (logs, registry, cluster)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
command -v go >/dev/null 2>&1 || export PATH=$PATH:/usr/local/go/bin

# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
# A throwaway cluster may skip fsync, and the tests' pools need more than 100
# connections.
throwaway_services test "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"

# GOTESTFLAGS is split on spaces on purpose.
# shellcheck disable=SC2086
go test -count=1 -timeout "${SLIPWAY_TEST_TIMEOUT:-60m}" ${GOTESTFLAGS:-} ./...
# The end-to-end tests are their own module (test/e2e: chromedp and the other
# test-only libraries stay out of the graph the binary is built from).
# shellcheck disable=SC2086
go -C test/e2e test -count=1 -timeout "${SLIPWAY_TEST_TIMEOUT:-60m}" ${GOTESTFLAGS:-} ./...

# The Helm chart's and docker-compose.yml's tests are their own module
# (deploy/test: Helm, the Kubernetes API types and compose-go stay out of
# go.mod). They need no services; a narrowed run (GOTESTFLAGS set) skips them
# unless SLIPWAY_DEPLOY_TESTS=1.
if [ -z "${GOTESTFLAGS:-}" ] || [ -n "${SLIPWAY_DEPLOY_TESTS:-}" ]; then
	go -C deploy/test test -count=1 -timeout 30m ./...
fi
