#!/usr/bin/env bash
# deps.sh installs what slipway's build, `make run` and `make test` need on a
# Debian 12 machine (run as root, or with sudo). Every step checks before it
# acts, so a second run on a ready machine takes well under a second:
#
#   - Debian packages: runc (BuildKit's OCI worker), qemu-user-static (arm64
#     emulation), docker-registry, git (checkouts, git daemon), openssl and curl
#     (the signed test push), chromium (the dashboard's browser tests, run
#     headless), etcd-server (the store of the chart tests' kube-apiserver),
#     podman with catatonit (its pause image), netavark and
#     aardvark-dns (the integration test Pods; slipway gives podman its own
#     containers.conf through CONTAINERS_CONF, see pod.ContainersConf, so
#     nothing of the machine's container configuration changes),
#     PostgreSQL 15 when no initdb is found;
#   - the arm64 dpkg architecture and the busybox-static .debs for amd64 and
#     arm64, cached in $SLIPWAY_CACHE_DIR/debs (default .cache/debs): the tests
#     build their multi-platform base image from them; and the .debs of git
#     and the libraries it links, for the self-build test's worker base;
#   - the qemu-aarch64 binfmt_misc handler, registered by hand: without systemd
#     nothing registers it when the package is installed;
#   - bin/buildkitd and bin/buildctl, built from the github.com/moby/buildkit
#     version pinned in test/tools/go.mod, equal to the client's in go.mod (a
#     `go install ...@version` of it is refused);
#   - bin/gitea, from code.gitea.io/gitea at the version scripts/gitea.sh pins
#     (about 10 minutes on two cores the first time, then stamped);
#   - bin/kube-apiserver, from k8s.io/kubernetes at the version
#     deploy/kube-apiserver/go.mod pins (scripts/kube-apiserver.sh; about
#     15 minutes on two cores the first time, then stamped).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
cd "$ROOT"
CACHE=${SLIPWAY_CACHE_DIR:-$ROOT/.cache}
DEBS=$CACHE/debs
command -v go >/dev/null 2>&1 || export PATH=$PATH:/usr/local/go/bin

APT_PACKAGES=(runc qemu-user-static docker-registry git openssl curl chromium podman catatonit netavark aardvark-dns openssh-server openssh-client etcd-server)
BINFMT=/proc/sys/fs/binfmt_misc

log() { echo "deps: $*" >&2; }
die() { echo "deps: $*" >&2; exit 1; }
as_root() {
	if [ "$(id -u)" = 0 ]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo "$@"
	else
		die "root is needed for: $*"
	fi
}

apt_updated=
apt_update() {
	[ -n "$apt_updated" ] && return 0
	log "apt-get update"
	as_root apt-get update -qq
	apt_updated=1
}

apt_install() {
	log "installing $*"
	# A package's init script would start its own daemon (the registry on
	# :5000, a PostgreSQL cluster on :5432) where make run wants its own.
	# policy-rc.d answering 101 tells invoke-rc.d not to start anything.
	local policy=/usr/sbin/policy-rc.d made= rc=0
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
		as_root chmod 755 "$policy"
		made=1
	fi
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" || rc=$?
	[ -n "$made" ] && as_root rm -f "$policy"
	return "$rc"
}


# The arm64 architecture comes first: the package lists fetched by a later
# apt-get update must include it for `apt-get download busybox-static:arm64`.
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
	log "dpkg --add-architecture arm64"
	as_root dpkg --add-architecture arm64
	apt_update
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
	[[ $status == ii* ]] || missing+=("$p")
done
[ -n "$(pg_bindir)" ] || missing+=(postgresql-15)
if [ ${#missing[@]} -gt 0 ]; then
	apt_update
	apt_install "${missing[@]}"
fi
[ -n "$(pg_bindir)" ] || die "no initdb found after installing postgresql-15"

deb_for() { ls "$DEBS"/busybox-static_*_"$1".deb 2>/dev/null | head -n 1; }
if [ -z "$(deb_for amd64)" ] || [ -z "$(deb_for arm64)" ]; then
	mkdir -p "$DEBS"
	log "downloading busybox-static for amd64 and arm64 into $DEBS"
	download() {
		# APT::Sandbox::User=root: _apt may not be able to write into $DEBS.
		(cd "$DEBS" && apt-get -qq -o APT::Sandbox::User=root download busybox-static:amd64 busybox-static:arm64)
	}
	if ! download; then
		# Stale package lists name files the mirror no longer has.
		[ -z "$apt_updated" ] || die "apt-get download busybox-static failed"
		apt_update
		download
	fi
fi

# git and the libraries its binary links (not curl: no http(s) remotes), for
# amd64 and arm64: the self-build test layers them on the busybox base so that
# slipway's own image can check commits out.
GIT_DEBS=(git libc6 zlib1g libpcre2-8-0)
git_debs_missing() {
	local p a
	for p in "${GIT_DEBS[@]}"; do
		for a in amd64 arm64; do
			ls "$DEBS/${p}"_*_"$a".deb >/dev/null 2>&1 || return 0
		done
	done
	return 1
}
if git_debs_missing; then
	mkdir -p "$DEBS"
	log "downloading ${GIT_DEBS[*]} for amd64 and arm64 into $DEBS"
	git_download() {
		local p args=()
		for p in "${GIT_DEBS[@]}"; do args+=("$p:amd64" "$p:arm64"); done
		(cd "$DEBS" && apt-get -qq -o APT::Sandbox::User=root download "${args[@]}")
	}
	if ! git_download; then
		[ -z "$apt_updated" ] || die "apt-get download ${GIT_DEBS[*]} failed"
		apt_update
		git_download
	fi
fi

if [ ! -e "$BINFMT/register" ]; then
	log "mounting binfmt_misc"
	as_root mount -t binfmt_misc binfmt_misc "$BINFMT" ||
		die "cannot mount binfmt_misc on $BINFMT: arm64 builds need it (a container must be privileged)"
fi
if [ ! -e "$BINFMT/qemu-aarch64" ]; then
	log "registering qemu-aarch64 with binfmt_misc"
	# The F flag in Debian's entry makes the kernel open the interpreter now,
	# so it also works inside BuildKit's containers.
	grep -v '^#' /usr/lib/binfmt.d/qemu-aarch64.conf | as_root tee "$BINFMT/register" >/dev/null ||
		die "cannot register qemu-aarch64 with binfmt_misc"
elif [ "$(head -n 1 "$BINFMT/qemu-aarch64")" != enabled ]; then
	echo 1 | as_root tee "$BINFMT/qemu-aarch64" >/dev/null
fi
# Check that an arm64 binary really runs: the busybox from the arm64 deb.
check=$(mktemp -d)
dpkg-deb --fsys-tarfile "$(deb_for arm64)" | tar -x -C "$check" ./bin/busybox
arch=$("$check/bin/busybox" uname -m 2>&1 || true)
rm -rf "$check"
[ "$arch" = aarch64 ] || die "an arm64 binary does not run through binfmt_misc (uname -m said: $arch)"

# The stamp holds the module version and the Go version the binaries were
# built with, so a go.sum changed by other dependencies does not cost the
# ~90 s build, and a new BuildKit pin does rebuild.
# They come from test/tools, a module of their own, so the daemon's
# dependencies stay out of slipway's go.mod.
want="$(go -C test/tools list -m -f '{{.Version}}' github.com/moby/buildkit) $(go env GOVERSION)"
stamp=bin/.buildkit-version
if [ -x bin/buildkitd ] && [ -x bin/buildctl ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
	:
else
	log "building bin/buildkitd and bin/buildctl (buildkit $want; about 90 s the first time)"
	mkdir -p bin
	go -C test/tools build -o "$ROOT/bin/" github.com/moby/buildkit/cmd/buildkitd github.com/moby/buildkit/cmd/buildctl
	echo "$want" >"$stamp"
fi

# bin/gitea, the real forge with its own registry the end-to-end tests run.
bash "$ROOT/scripts/gitea.sh"

# bin/kube-apiserver, the real API server the Helm chart's tests dry-run every
# rendered object against (on the etcd from etcd-server).
bash "$ROOT/scripts/kube-apiserver.sh"
