#!/usr/bin/env bash
# Checks (and, as root with apt, installs) the Debian packages the test
# suite needs beyond Go, named as arguments by `make test` (busybox-static
# for the docker test image, chromium for the approval page's browser test,
# curl), then builds the docker test image when Docker runs. Where it cannot
# install, it stops at once with the exact command to run.
set -euo pipefail

have() {
	if command -v dpkg >/dev/null 2>&1; then
		dpkg -s "$1" >/dev/null 2>&1
	else
		command -v "${1%-static}" >/dev/null 2>&1
	fi
}

need=()
for p in "$@"; do have "$p" || need+=("$p"); done

if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "testdeps: installing ${need[*]}"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		apt-get install -y -qq --no-install-recommends "${need[@]}" ca-certificates
	else
		echo "testdeps: the tests need ${need[*]}; install them with:" >&2
		echo "    sudo apt-get install -y --no-install-recommends ${need[*]}" >&2
		exit 1
	fi
fi

if docker info >/dev/null 2>&1; then
	"$(dirname "$0")/../images/busybox/build.sh"
fi
