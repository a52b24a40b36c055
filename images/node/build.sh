#!/usr/bin/env bash
# Builds polos/node:20 (or $TAG), a stand-in for node:20-slim (which the seed
# examples use) without a registry: a Debian bookworm minbase root filesystem
# from debootstrap, plus Node.js 20, plus the sandbox user node = 1000:1000
# (as in the official node images) and /workspace owned by it, imported with
# the Docker Engine API (polos-images import; the same code as the busybox
# image). Takes minutes and about 250 MB; not needed by the tests.
#
# Node.js 20 is not in Debian bookworm (it has 18), so it comes from, in order:
#   NODE_DEB=/path/to/nodejs_20*.deb   a package file, unpacked with dpkg -x
#   the nodejs 20 package installed on this host (files listed by dpkg -L)
# and the script fails otherwise rather than tag Node.js 18 as 20.
#
# Where a registry exists, any image with /bin/sh works instead, e.g.
#   docker pull node:20-slim   and use image "node:20-slim" (its user node is
#   1000:1000; give workspace_dir, as the seeds do).
#
# Needs root (debootstrap, chroot). Idempotent: does nothing if the image
# exists (FORCE=1 rebuilds). SUITE and MIRROR override the Debian source.
set -euo pipefail
cd "$(dirname "$0")/../.."
TAG="${TAG:-polos/node:20}"
SUITE="${SUITE:-bookworm}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
NODE_MAJOR=20

polos_images() { go run ./images/cmd/polos-images "$@"; }

if [[ "${FORCE:-}" != 1 ]] && polos_images exists -tag "$TAG"; then
	echo "$TAG exists (FORCE=1 rebuilds)"
	exit 0
fi
if [[ $EUID -ne 0 ]]; then
	echo "build.sh: run as root (debootstrap and chroot need it)" >&2
	exit 1
fi
if ! command -v debootstrap >/dev/null; then
	apt-get install -y --no-install-recommends debootstrap
fi

work=$(mktemp -d /var/tmp/polos-node.XXXXXX)
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"

debootstrap --variant=minbase --include=libstdc++6,ca-certificates "$SUITE" "$root" "$MIRROR"

if [[ -n "${NODE_DEB:-}" ]]; then
	dpkg -x "$NODE_DEB" "$root"
elif [[ "$(dpkg-query -W -f='${Version}' nodejs 2>/dev/null || true)" == "$NODE_MAJOR".* ]]; then
	# Copy the installed package's files (not its directories: they exist).
	dpkg -L nodejs | while IFS= read -r f; do
		if [[ -f "$f" || -L "$f" ]]; then printf '%s\0' "${f#/}"; fi
	done | tar -C / --null -T - -cf - | tar -C "$root" -xf -
else
	echo "build.sh: no Node.js $NODE_MAJOR: set NODE_DEB to a nodejs_$NODE_MAJOR*.deb or install nodejs $NODE_MAJOR on this host" >&2
	exit 1
fi

version=$(chroot "$root" node --version)
if [[ "$version" != v"$NODE_MAJOR".* ]]; then
	echo "build.sh: node in the image is $version, want v$NODE_MAJOR" >&2
	exit 1
fi

echo 'node:x:1000:1000:node:/home/node:/bin/bash' >>"$root/etc/passwd"
echo 'node:x:1000:' >>"$root/etc/group"
echo 'node:*:19000:0:99999:7:::' >>"$root/etc/shadow"
install -d -o 1000 -g 1000 -m 0755 "$root/home/node" "$root/workspace"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
	"$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*

tar -C "$root" --numeric-owner -cf - . | polos_images import -tag "$TAG"
echo "built $TAG with node $version"
