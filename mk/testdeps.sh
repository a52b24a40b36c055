#!/usr/bin/env bash
# Checks (and, as root with apt, installs) what the test suite needs beyond
# Go: busybox-static (the docker test image), chromium (the approval page's
# browser test), curl, and the test image itself when Docker runs. Called by
# `make test`; on a machine where it cannot install, it stops at once with
# the exact command to run.
set -euo pipefail

need=()
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || need+=(chromium)
if command -v dpkg >/dev/null 2>&1 && ! dpkg -s busybox-static >/dev/null 2>&1; then need+=(busybox-static); fi
command -v curl >/dev/null 2>&1 || need+=(curl)

if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "testdeps: installing ${need[*]}"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		apt-get install -y -qq --no-install-recommends "${need[@]}" ca-certificates
	else
		echo "testdeps: the tests need ${need[*]}; install them with:" >&2
		echo "    sudo apt-get install -y --no-install-recommends ${need[*]}" >&2
		echo "(or set POLOS_SKIP_BROWSER=1 to leave out the browser test)" >&2
		exit 1
	fi
fi

if docker info >/dev/null 2>&1; then
	"$(dirname "$0")/../images/busybox/build.sh"
fi
