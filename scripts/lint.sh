#!/usr/bin/env bash
# lint.sh checks the Go modules that hold packages (the main module, test/e2e
# and deploy/test; test/tools only pins tool versions): gofmt (no file may need
# formatting), go vet, and staticcheck at the version pinned below, fetched
# through the Go module proxy on first use. It runs every check, prints each
# finding as file:line: message, and exits 1 when any check found something.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
command -v go >/dev/null 2>&1 || export PATH=$PATH:/usr/local/go/bin

STATICCHECK=honnef.co/go/tools/cmd/staticcheck@v0.8.2
MODULES=(. test/e2e deploy/test)

status=0
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then
	echo "lint: these files need gofmt -w:" >&2
	echo "$unformatted" >&2
	status=1
fi
for mod in "${MODULES[@]}"; do
	echo "lint: go vet and staticcheck in $mod"
	go -C "$mod" vet ./... || status=1
	go -C "$mod" run "$STATICCHECK" ./... || status=1
done
exit $status
