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
