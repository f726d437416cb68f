#!/usr/bin/env bash
# services.sh starts and stops the real parts slipway runs against, all under
# one state folder: a PostgreSQL cluster, a distribution registry and
# buildkitd. `make run`, `make test` and `make bench` use it. It builds and
# runs test/cmd/devstack (package test/devstack), where each service is
# configured, the same code the tests use for their own registries and
# buildkitds; see that command for the settings (SLIPWAY_PG_PORT,
# SLIPWAY_REGISTRY_PORT, SLIPWAY_PG_OPTIONS, SLIPWAY_READY_TIMEOUT,
# SLIPWAY_BIN_DIR, SLIPWAY_CACHE_DIR).
#
#   scripts/services.sh start STATE_DIR   start all three, wait until each answers,
#                                         write STATE_DIR/env (export lines)
#   scripts/services.sh stop STATE_DIR    stop whatever runs under STATE_DIR, also
#                                         after a partial start
#   scripts/services.sh purge STATE_DIR   stop, then delete STATE_DIR
#
# Logs go to STATE_DIR/logs/*.log; on a failed start the tail of the log of
# the service that failed is printed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
command -v go >/dev/null 2>&1 || export PATH=$PATH:/usr/local/go/bin

# Built beside the other binaries (never into SLIPWAY_BIN_DIR, which may be
# another checkout's), under a temporary name first: a second services.sh
# may be running the previous one.
out=$ROOT/bin/devstack
mkdir -p "$ROOT/bin"
(cd "$ROOT" && go build -o "$out.$$" ./test/cmd/devstack) || { rm -f "$out.$$"; exit 1; }
mv -f "$out.$$" "$out"
exec "$out" -root "$ROOT" "$@"
