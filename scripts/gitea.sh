#!/usr/bin/env bash
# gitea.sh builds bin/gitea, the real forge (with its own container registry)
# the end-to-end tests start on a loopback port. It is built from Gitea's own
# module, inside the module's source folder from the Go module cache, so
# Gitea's go.mod (its replace directives, its dependency graph) is used as is
# and stays out of slipway's go.mod. SQLite is enough for the tests.
#
# About 10 minutes the first time on two cores; the stamp bin/.gitea-version
# (Gitea version and Go version) makes a second run take well under a second.
# Prints nothing on success but the one build line; the source folder, which
# the tests need as [server] STATIC_ROOT_PATH (options/locale, templates), is
# found again with `go mod download -json code.gitea.io/gitea@$GITEA_VERSION`.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
command -v go >/dev/null 2>&1 || export PATH=$PATH:/usr/local/go/bin

GITEA_VERSION=${GITEA_VERSION:-v1.27.3}
want="$GITEA_VERSION $(go env GOVERSION)"
stamp=bin/.gitea-version
if [ -x bin/gitea ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
	exit 0
fi
echo "gitea: building bin/gitea (gitea $want; about 10 minutes the first time)" >&2
dir=$(go mod download -json "code.gitea.io/gitea@$GITEA_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$dir" ] || { echo "gitea: cannot find the source of code.gitea.io/gitea@$GITEA_VERSION" >&2; exit 1; }
mkdir -p bin
# GOFLAGS from the caller (-mod=mod would write into the read-only module
# cache) is replaced; -trimpath keeps the build reproducible.
(cd "$dir" && GOFLAGS=-buildvcs=false GOWORK=off go build -trimpath -tags 'sqlite sqlite_unlock_notify' \
	-ldflags "-X main.Version=${GITEA_VERSION#v}" \
	-o "$ROOT/bin/gitea.tmp" .)
mv bin/gitea.tmp bin/gitea
echo "$want" >"$stamp"
