#!/usr/bin/env bash
# services.sh starts and stops the real parts slipway runs against, all under
# one state folder: a PostgreSQL cluster, a distribution registry and
# buildkitd. `make run` and `make test` both use it.
#
#   scripts/services.sh start STATE_DIR   start all three, wait until each answers,
#                                         write STATE_DIR/env (export lines)
#   scripts/services.sh stop STATE_DIR    stop whatever STATE_DIR/run/*.pid and the
#                                         cluster name, also after a partial start
#   scripts/services.sh purge STATE_DIR   stop, then delete STATE_DIR
#
# Settings (environment):
#   SLIPWAY_PG_PORT        PostgreSQL port on 127.0.0.1; empty or 0: a free one
#   SLIPWAY_REGISTRY_PORT  registry port on 127.0.0.1; empty or 0: a free one
#   SLIPWAY_PG_OPTIONS     extra postgres options, e.g. "-c fsync=off"
#   SLIPWAY_READY_TIMEOUT  seconds to wait for each service (default 60)
#   SLIPWAY_CACHE_DIR      where `make deps` put the busybox .debs (default .cache)
#
# Logs go to STATE_DIR/logs/*.log; on a failed start the tail of the log of
# the service that failed is printed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
BIN=${SLIPWAY_BIN_DIR:-$ROOT/bin}
CACHE=${SLIPWAY_CACHE_DIR:-$ROOT/.cache}
READY_TIMEOUT=${SLIPWAY_READY_TIMEOUT:-60}

# Messages must not kill a stop whose terminal or pipe went away.
log() { echo "services: $*" >&2 || true; }
die() { echo "services: $*" >&2; exit 1; }

# fail_with_log MESSAGE LOGFILE prints MESSAGE and the end of LOGFILE, then exits.
fail_with_log() {
	echo "services: $1" >&2
	if [ -s "$2" ]; then
		echo "services: last lines of $2:" >&2
		tail -n 40 "$2" | sed 's/^/    /' >&2
	fi
	exit 1
}

usage() { die "usage: $0 start|stop|purge STATE_DIR"; }


port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pick_port REQUESTED NAME VAR prints REQUESTED if it is free, or a free port
# when REQUESTED is empty or 0. Ports come from 20000-31999, below Linux's
# ephemeral range, so an outgoing connection does not hold the one picked.
pick_port() {
	local p i
	if [ -n "$1" ] && [ "$1" != 0 ]; then
		port_in_use "$1" && die "$2: 127.0.0.1:$1 is already in use (set $3 to another port, or 0 for a free one)"
		echo "$1"
		return
	fi
	for i in $(seq 1 100); do
		p=$((20000 + RANDOM % 12000))
		port_in_use "$p" || { echo "$p"; return; }
	done
	die "$2: no free port found"
}

# wait_ready NAME PID LOGFILE CMD... runs CMD until it succeeds, failing with
# LOGFILE's tail when PID exits or READY_TIMEOUT passes.
wait_ready() {
	local name=$1 pid=$2 logf=$3
	shift 3
	local deadline=$((SECONDS + READY_TIMEOUT))
	until "$@" >/dev/null 2>&1; do
		if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
			fail_with_log "$name exited during start-up" "$logf"
		fi
		if ((SECONDS >= deadline)); then
			fail_with_log "$name not ready after ${READY_TIMEOUT}s" "$logf"
		fi
		sleep 0.1
	done
}

# alive PIDFILE tells whether the process in PIDFILE still runs and is one of
# ours: its command line names the state folder (a reused pid does not).
alive() {
	local pid
	[ -s "$1" ] || return 1
	pid=$(cat "$1")
	kill -0 "$pid" 2>/dev/null || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$STATE"
}

# run_as_pg runs a PostgreSQL binary as the cluster's owner: the server
# refuses to run as root.
run_as_pg() {
	if [ "$(id -u)" = 0 ]; then
		runuser -u "$PG_OS_USER" -- "$@"
	else
		"$@"
	fi
}

pg_os_user() {
	if [ "$(id -u)" != 0 ]; then
		id -un
		return
	fi
	if ! id -u postgres >/dev/null 2>&1; then
		useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin postgres >&2
	fi
	echo postgres
}

# pg_root prints the folder for the cluster: STATE/pg, unless the server's
# user cannot reach it (a repository under /root, say); then a folder in
# /var/tmp named after the state folder, recorded in STATE/run/pgroot.
pg_root() {
	if [ -s "$RUN/pgroot" ]; then
		cat "$RUN/pgroot"
		return
	fi
	local dir=$STATE/pg
	mkdir -p "$dir"
	if [ "$(id -u)" = 0 ]; then
		chown "$PG_OS_USER" "$dir"
		if ! runuser -u "$PG_OS_USER" -- test -w "$dir"; then
			dir=/var/tmp/slipway-pg-$(printf '%s' "$STATE" | cksum | cut -d' ' -f1)
			mkdir -p "$dir"
			chown "$PG_OS_USER" "$dir"
			log "postgres cannot reach $STATE; its cluster lives in $dir"
		fi
	fi
	echo "$dir" >"$RUN/pgroot"
	echo "$dir"
}

start_postgres() {
	local port=$1 pgroot data
	PG_OS_USER=$(pg_os_user)
	pgroot=$(pg_root)
	data=$pgroot/data
	if [ ! -s "$data/PG_VERSION" ]; then
		run_as_pg "$PGBIN/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --locale=C \
			>"$LOGS/initdb.log" 2>&1 || fail_with_log "initdb failed" "$LOGS/initdb.log"
	fi
	# pg_ctl writes the server log as the server's user.
	touch "$pgroot/postgres.log"
	[ "$(id -u)" = 0 ] && chown "$PG_OS_USER" "$pgroot/postgres.log"
	ln -sfn "$pgroot/postgres.log" "$LOGS/postgres.log"
	# TCP only (-k ''): a socket folder's path may be too long or not ours.
	run_as_pg "$PGBIN/pg_ctl" -D "$data" -l "$pgroot/postgres.log" -w -t "$READY_TIMEOUT" \
		-o "-c listen_addresses=127.0.0.1 -p $port -k '' ${SLIPWAY_PG_OPTIONS:-}" start >/dev/null ||
		fail_with_log "postgres did not start" "$LOGS/postgres.log"
	wait_ready postgres "" "$LOGS/postgres.log" "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres
	local db
	for db in slipway slipway_test; do
		if [ -z "$("$PGBIN/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]; then
			"$PGBIN/psql" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -c "CREATE DATABASE $db" >/dev/null
		fi
	done
	PG_PORT=$port
}

start_registry() {
	local port=$1
	mkdir -p "$STATE/registry/data"
	cat >"$STATE/registry/config.yml" <<EOF
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $STATE/registry/data
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$port
  secret: slipway-dev-only
EOF
	setsid docker-registry serve "$STATE/registry/config.yml" >>"$LOGS/registry.log" 2>&1 </dev/null &
	echo $! >"$RUN/registry.pid"
	wait_ready registry "$!" "$LOGS/registry.log" curl -fsS -o /dev/null "http://127.0.0.1:$port/v2/"
	REGISTRY_PORT=$port
}

start_buildkitd() {
	[ -x "$BIN/buildkitd" ] && [ -x "$BIN/buildctl" ] || die "no $BIN/buildkitd: run make deps"
	# A unix socket path must fit in 108 bytes.
	local sockdir=$RUN
	if [ ${#sockdir} -gt 80 ]; then
		sockdir=/tmp/slipway-bk-$(printf '%s' "$STATE" | cksum | cut -d' ' -f1)
		mkdir -p "$sockdir"
	fi
	BUILDKIT_ADDR=unix://$sockdir/buildkitd.sock
	cat >"$STATE/buildkitd.toml" <<EOF
# Written by scripts/services.sh.
[worker.oci]
  enabled = true
[worker.containerd]
  enabled = false
[registry."127.0.0.1:$REGISTRY_PORT"]
  http = true
  insecure = true
EOF
	# --otel-socket-path: the default, /run/buildkit/otel-grpc.sock, would be
	# shared by every buildkitd on the machine (make run beside make test).
	setsid "$BIN/buildkitd" --root "$STATE/buildkit" --addr "$BUILDKIT_ADDR" \
		--oci-worker=true --containerd-worker=false --config "$STATE/buildkitd.toml" \
		--otel-socket-path "$sockdir/otel-grpc.sock" \
		>>"$LOGS/buildkitd.log" 2>&1 </dev/null &
	echo $! >"$RUN/buildkitd.pid"
	wait_ready buildkitd "$!" "$LOGS/buildkitd.log" "$BIN/buildctl" --addr "$BUILDKIT_ADDR" debug workers
	# Not `buildctl | grep -q`: under pipefail, grep leaving early can kill
	# buildctl with SIGPIPE and fail a check that matched.
	local workers
	workers=$("$BIN/buildctl" --addr "$BUILDKIT_ADDR" debug workers -v)
	if ! grep -q 'linux/arm64' <<<"$workers"; then
		fail_with_log "buildkitd offers no linux/arm64 worker: qemu-aarch64 is not registered with binfmt_misc (run make deps)" "$LOGS/buildkitd.log"
	fi
}

write_env() {
	local debs=$CACHE/debs corpus
	# The third-party webhook corpus, when it is beside the repository, only
	# feeds the server's conformance tests; nothing needs it.
	corpus=$(cd "$ROOT/.." && pwd)/shared/fixtures/webhooks
	{
		echo "# Written by scripts/services.sh start; source it."
		echo "export SLIPWAY_DATABASE_URL='postgres://postgres@127.0.0.1:$PG_PORT/slipway?sslmode=disable'"
		echo "export TEST_DATABASE_URL='postgres://postgres@127.0.0.1:$PG_PORT/slipway_test?sslmode=disable'"
		echo "export SLIPWAY_BUILDKIT_ADDR='$BUILDKIT_ADDR'"
		echo "export BUILDKIT_HOST='$BUILDKIT_ADDR'"
		echo "export SLIPWAY_REGISTRY='127.0.0.1:$REGISTRY_PORT'"
		echo "export TEST_REGISTRY='127.0.0.1:$REGISTRY_PORT'"
		echo "export SLIPWAY_BUSYBOX_DEBS='$debs'"
		[ -d "$corpus" ] && echo "export SLIPWAY_WEBHOOK_CORPUS='$corpus'"
		echo "export SLIPWAY_SERVICES_STATE='$STATE'"
	} >"$STATE/env.tmp"
	mv "$STATE/env.tmp" "$STATE/env"
}

cmd_start() {
	mkdir -p "$STATE"
	STATE=$(cd "$STATE" && pwd)
	RUN=$STATE/run
	LOGS=$STATE/logs
	mkdir -p "$RUN" "$LOGS"
	# mktemp -d makes 0700 folders; the postgres user must reach STATE/pg.
	chmod 755 "$STATE"
	local f
	for f in "$RUN"/*.pid; do
		alive "$f" && die "services already run under $STATE ($(basename "$f" .pid)); stop them with: $0 stop $STATE"
	done
	PGBIN=$(pg_bindir)
	[ -n "$PGBIN" ] || die "no PostgreSQL initdb found: run make deps"
	if [ -s "$RUN/pgroot" ] && [ -s "$(cat "$RUN/pgroot")/data/postmaster.pid" ] &&
		kill -0 "$(head -n 1 "$(cat "$RUN/pgroot")/data/postmaster.pid")" 2>/dev/null; then
		die "postgres already runs under $STATE; stop it with: $0 stop $STATE"
	fi
	rm -f "$STATE/env"
	# A failed start leaves nothing running behind it.
	trap 'rc=$?; if [ $rc -ne 0 ]; then log "start failed; stopping what started"; cmd_stop >/dev/null 2>&1 || true; fi' EXIT

	# Both ports are picked (or checked) before anything starts.
	local t0=$SECONDS pg_port reg_port
	pg_port=$(pick_port "${SLIPWAY_PG_PORT:-}" postgres SLIPWAY_PG_PORT)
	reg_port=$(pick_port "${SLIPWAY_REGISTRY_PORT:-}" registry SLIPWAY_REGISTRY_PORT)
	[ "$pg_port" != "$reg_port" ] || die "postgres and the registry cannot share port $pg_port"
	start_postgres "$pg_port"
	log "postgres on 127.0.0.1:$PG_PORT"
	start_registry "$reg_port"
	log "registry on 127.0.0.1:$REGISTRY_PORT"
	start_buildkitd
	log "buildkitd on $BUILDKIT_ADDR"
	write_env
	log "ready in $((SECONDS - t0))s; environment in $STATE/env, logs in $LOGS"
}

# stop_pidfile PIDFILE sends SIGTERM, waits up to 30 s, then SIGKILL.
stop_pidfile() {
	local f=$1 name pid i
	name=$(basename "$f" .pid)
	if alive "$f"; then
		pid=$(cat "$f")
		kill -TERM "$pid" 2>/dev/null || true
		for i in $(seq 1 300); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			log "$name did not stop in 30s; killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
		log "stopped $name"
	fi
	rm -f "$f"
}

cmd_stop() {
	[ -d "$STATE" ] || return 0
	STATE=$(cd "$STATE" && pwd)
	RUN=$STATE/run
	local f name
	# Clients first (git daemon, started by scripts/run.sh), the database last.
	for name in git-daemon buildkitd registry; do
		[ -e "$RUN/$name.pid" ] && stop_pidfile "$RUN/$name.pid"
	done
	for f in "$RUN"/*.pid; do
		[ -e "$f" ] && stop_pidfile "$f"
	done
	if [ -s "$RUN/pgroot" ]; then
		local data
		data=$(cat "$RUN/pgroot")/data
		if [ -s "$data/postmaster.pid" ] && kill -0 "$(head -n 1 "$data/postmaster.pid")" 2>/dev/null; then
			PG_OS_USER=$(stat -c %U "$data")
			PGBIN=$(pg_bindir)
			run_as_pg "$PGBIN/pg_ctl" -D "$data" -m fast -w -t 30 stop >/dev/null ||
				run_as_pg "$PGBIN/pg_ctl" -D "$data" -m immediate -w stop >/dev/null
			log "stopped postgres"
		fi
	fi
	# A buildkitd that was killed can leave its containers' mounts behind.
	local m
	for m in $(awk -v s="$STATE/" 'index($2, s) == 1 {print $2}' /proc/mounts | sort -r); do
		umount -l "$m" 2>/dev/null || true
	done
}

cmd_purge() {
	[ -d "$STATE" ] || return 0
	cmd_stop
	local pgroot=
	[ -s "$STATE/run/pgroot" ] && pgroot=$(cat "$STATE/run/pgroot")
	case $pgroot in
	/var/tmp/slipway-pg-*) rm -rf "$pgroot" ;;
	esac
	rm -rf "/tmp/slipway-bk-$(printf '%s' "$STATE" | cksum | cut -d' ' -f1)"
	rm -rf "$STATE"
}

[ $# -eq 2 ] || usage
STATE=$2
case $1 in
start) cmd_start ;;
stop) cmd_stop ;;
purge) cmd_purge ;;
*) usage ;;
esac
