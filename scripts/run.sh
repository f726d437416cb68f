#!/usr/bin/env bash
# run.sh is `make run`: PostgreSQL, the registry and buildkitd under a
# git-ignored state folder (.slipway-dev), a demo repository served by
# git daemon, then `bin/slipway dev` in the foreground. It prints where
# everything is, how to push to the demo and how to use the CLI. Ctrl-C, or
# any other way out, stops everything it started, and only that: a second
# `make run` on the same state folder is refused and leaves the first alone.
# The state folder (database, registry, demo repository, a development
# SLIPWAY_SECRET_KEY in STATE/secret-key) is kept across restarts.
#
# SLIPWAY_* variables set by the caller win over the defaults below.
#   SLIPWAY_PG_PORT (5433), SLIPWAY_REGISTRY_PORT (5000), SLIPWAY_GIT_PORT (9418)
#   SLIPWAY_DEV_STATE  state folder (default .slipway-dev)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
command -v go >/dev/null 2>&1 || export PATH=$PATH:/usr/local/go/bin

STATE=${SLIPWAY_DEV_STATE:-$ROOT/.slipway-dev}
export SLIPWAY_PG_PORT=${SLIPWAY_PG_PORT:-5433}
export SLIPWAY_REGISTRY_PORT=${SLIPWAY_REGISTRY_PORT:-5000}
GIT_PORT=${SLIPWAY_GIT_PORT:-9418}

# The caller's SLIPWAY_* variables, re-applied after the services' env file.
# (At top level: `declare` inside a function would make them local.)
caller_env=()
for v in $(compgen -e); do
	[[ $v == SLIPWAY_* ]] && caller_env+=("$(declare -p "$v")")
done

# One make run per state folder: the lock is held as long as this script
# runs (fd 9 is closed for everything it starts, so no service keeps it).
mkdir -p "$STATE/run"
exec 9>>"$STATE/run/make-run.lock"
if ! flock -n 9; then
	other=$(cat "$STATE/run/make-run.pid" 2>/dev/null || echo '?')
	echo "run: make run already runs under $STATE (pid $other); it was left alone." >&2
	echo "run: use that one, stop it with Ctrl-C in its terminal, or run a second stack with" >&2
	echo "run: its own SLIPWAY_DEV_STATE, SLIPWAY_PG_PORT, SLIPWAY_REGISTRY_PORT, SLIPWAY_GIT_PORT and SLIPWAY_ADDR." >&2
	exit 1
fi
echo $$ >"$STATE/run/make-run.pid"

cleanup() {
	local rc=$?
	trap - EXIT
	# Ignore SIGPIPE too: after a Ctrl-C the reader of our output (a tee, a
	# pager) may be gone, and a write must not end the clean-up.
	trap '' INT TERM PIPE
	echo "run: stopping the services under $STATE" >&2 || true
	bash scripts/services.sh stop "$STATE" 9>&- || true
	rm -f "$STATE/run/make-run.pid"
	exit "$rc"
}
trap 'exit 130' INT
trap 'exit 143' TERM

# services.sh cleans up after its own failed start; the services are ours to
# stop only once it succeeded.
bash scripts/services.sh start "$STATE" 9>&-
trap cleanup EXIT
# shellcheck source=/dev/null
source "$STATE/env"
for d in "${caller_env[@]}"; do
	eval "$d"
done
# The local registry as services.sh started it (the port may have been 0: any).
REGISTRY_HOST=$TEST_REGISTRY

export SLIPWAY_ADDR=${SLIPWAY_ADDR:-127.0.0.1:8080}
export SLIPWAY_PUBLIC_URL=${SLIPWAY_PUBLIC_URL:-http://$SLIPWAY_ADDR}
export SLIPWAY_REGISTRY=${SLIPWAY_REGISTRY:-$REGISTRY_HOST}
export SLIPWAY_GITHUB_WEBHOOK_SECRET=${SLIPWAY_GITHUB_WEBHOOK_SECRET:-devsecret}
export SLIPWAY_ADMIN_TOKEN=${SLIPWAY_ADMIN_TOKEN:-devtoken}
export SLIPWAY_DATABASE_URL SLIPWAY_BUILDKIT_ADDR
# A development key sealing repository secrets: made once per state folder
# (never one shared by every checkout), kept with the database it seals.
if [ -z "${SLIPWAY_SECRET_KEY:-}" ]; then
	if [ ! -s "$STATE/secret-key" ]; then
		(umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$STATE/secret-key.tmp")
		mv "$STATE/secret-key.tmp" "$STATE/secret-key"
	fi
	SLIPWAY_SECRET_KEY=$(cat "$STATE/secret-key")
fi
export SLIPWAY_SECRET_KEY

# git daemon serves STATE/git; the demo repository is STATE/git/demo.git,
# bare, and takes pushes (its post-receive hook tells slipway).
mkdir -p "$STATE/git"
if (exec 3<>"/dev/tcp/127.0.0.1/$GIT_PORT") 2>/dev/null; then
	echo "run: 127.0.0.1:$GIT_PORT is already in use (set SLIPWAY_GIT_PORT to another port)" >&2
	exit 1
fi
setsid git daemon --export-all --enable=receive-pack --base-path="$STATE/git" --reuseaddr \
	--informative-errors --listen=127.0.0.1 --port="$GIT_PORT" "$STATE/git" \
	>>"$STATE/logs/git-daemon.log" 2>&1 </dev/null 9>&- &
echo $! >"$STATE/run/git-daemon.pid"
for _ in $(seq 1 100); do
	(exec 3<>"/dev/tcp/127.0.0.1/$GIT_PORT") 2>/dev/null && break
	kill -0 "$(cat "$STATE/run/git-daemon.pid")" 2>/dev/null || break
	sleep 0.1
done
if ! (exec 3<>"/dev/tcp/127.0.0.1/$GIT_PORT") 2>/dev/null; then
	echo "run: git daemon did not start; last lines of its log:" >&2
	tail -n 20 "$STATE/logs/git-daemon.log" >&2
	exit 1
fi

go build -o bin/devdemo ./test/cmd/devdemo
bin/devdemo 9>&- -state "$STATE" -base-registry "$REGISTRY_HOST" -git-url "git://127.0.0.1:$GIT_PORT/demo.git"

# Not exec: the EXIT trap must stop the services when slipway ends. In the
# background with a wait, so that a SIGTERM to make reaches slipway through
# the trap (bash runs traps only between foreground commands). Ctrl-C's
# SIGINT reaches slipway from the terminal, as it shares our process group
# (Go turns SIGINT back on, although bash starts background commands with it
# ignored); forwarding it too would deliver it twice.
# The demo repository is served by git daemon, not a forge: let its first push
# register it with the payload's clone URL (never do this on a shared slipway).
export SLIPWAY_DEV_CLONE_URL_FROM_PAYLOAD=${SLIPWAY_DEV_CLONE_URL_FROM_PAYLOAD:-true}
export SLIPWAY_AUTO_REGISTER=${SLIPWAY_AUTO_REGISTER:-true}
# ... and may try an integration webhook on this machine.
export SLIPWAY_OUTBOUND_ALLOWED_HOSTS=${SLIPWAY_OUTBOUND_ALLOWED_HOSTS:-127.0.0.1}
# ... and is cloned over git://, which a shared slipway refuses.
export SLIPWAY_GIT_DEV_PROTOCOLS=${SLIPWAY_GIT_DEV_PROTOCOLS:-true}
bin/slipway dev 9>&- &
slipway_pid=$!
trap 'kill -TERM "$slipway_pid" 2>/dev/null || true' TERM HUP
trap ':' INT
rc=0
while :; do
	wait "$slipway_pid" && rc=0 || rc=$?
	kill -0 "$slipway_pid" 2>/dev/null || break
done
exit "$rc"
