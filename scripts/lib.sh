# lib.sh holds shell functions the other scripts share; source it.

# pg_bindir prints the directory holding PostgreSQL's initdb, newest version
# first, or nothing when there is none.
pg_bindir() {
	local d
	if d=$(command -v initdb 2>/dev/null); then
		dirname "$(readlink -f "$d")"
		return
	fi
	for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
		[ -x "$d/initdb" ] && { echo "$d"; return; }
	done
}

# throwaway_services NAME PG_OPTIONS starts PostgreSQL (with PG_OPTIONS), a
# registry and buildkitd in a new temporary folder on free ports, exports their
# environment (TEST_DATABASE_URL, BUILDKIT_HOST, …), and stops and deletes them
# when the script exits, printing the tail of each service's log if it failed.
# SLIPWAY_KEEP_STATE=1 keeps the folder. Needs ROOT set to the repository.
throwaway_services() {
	SERVICES_STATE=$(mktemp -d "${TMPDIR:-/tmp}/slipway-$1.XXXXXX")
	trap _throwaway_finish EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	SLIPWAY_PG_PORT=0 SLIPWAY_REGISTRY_PORT=0 SLIPWAY_PG_OPTIONS="$2" \
		bash "$ROOT/scripts/services.sh" start "$SERVICES_STATE"
	set -a
	# shellcheck source=/dev/null
	source "$SERVICES_STATE/env"
	set +a
}

_throwaway_finish() {
	local rc=$?
	trap - EXIT
	# Ignore SIGPIPE too: after a Ctrl-C the reader of our output (a tee, a
	# pager) may be gone, and a write must not end the clean-up.
	trap '' INT TERM PIPE
	bash "$ROOT/scripts/services.sh" stop "$SERVICES_STATE" || true
	if [ "$rc" -ne 0 ]; then
		local f
		for f in "$SERVICES_STATE"/logs/*.log; do
			[ -s "$f" ] || continue
			echo "--- last lines of $(basename "$f") ---" >&2 || true
			tail -n 30 "$f" >&2 || true
		done
	fi
	if [ -n "${SLIPWAY_KEEP_STATE:-}" ]; then
		echo "state kept in $SERVICES_STATE" >&2 || true
	else
		bash "$ROOT/scripts/services.sh" purge "$SERVICES_STATE" || true
	fi
	exit "$rc"
}
