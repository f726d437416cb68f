#!/usr/bin/env bash
# kube-apiserver.sh builds bin/kube-apiserver, the real Kubernetes API server
# that deploy/test's TestChartServerDryRun runs (on Debian's etcd) to dry-run
# every object the Helm chart renders. It is built from k8s.io/kubernetes
# through the wrapper module in deploy/kube-apiserver, whose go.mod pins the
# version and replaces each k8s.io/* staging module with its own release, so
# none of it enters slipway's go.mod or deploy/test's.
#
# The stamp bin/.kube-apiserver-version (the wrapper's go.sum digest and the Go
# version) makes a second run take well under a second; a new pin rebuilds.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
command -v go >/dev/null 2>&1 || export PATH=$PATH:/usr/local/go/bin

mod=deploy/kube-apiserver
version=$(GOWORK=off go -C "$mod" list -m -f '{{.Version}}' k8s.io/kubernetes)
want="$version $(sha256sum "$mod/go.sum" | cut -c1-12) $(go env GOVERSION)"
stamp=bin/.kube-apiserver-version
# A binary without a stamp (built by hand, or before the stamp existed) is
# kept when it reports the pinned version.
if [ -x bin/kube-apiserver ] && [ ! -e "$stamp" ] &&
	[ "$(bin/kube-apiserver --version 2>/dev/null)" = "Kubernetes $version" ]; then
	echo "$want" >"$stamp"
fi
if [ -x bin/kube-apiserver ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
	exit 0
fi
echo "kube-apiserver: building bin/kube-apiserver (kubernetes $want; about 15 minutes on two cores the first time)" >&2
mkdir -p bin
# GOFLAGS from the caller (-mod=mod) is replaced; -trimpath keeps the build
# reproducible; -X gives `kube-apiserver --version` (and /version) the release
# instead of v0.0.0-master, which the module build would otherwise report.
minor=${version#v1.}
minor=${minor%%.*}
ldflags="-X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
GOFLAGS=-buildvcs=false GOWORK=off go -C "$mod" build -trimpath -ldflags "$ldflags" -o "$ROOT/bin/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
mv bin/kube-apiserver.tmp bin/kube-apiserver
echo "$want" >"$stamp"
