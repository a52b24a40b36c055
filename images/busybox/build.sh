#!/usr/bin/env bash
# Builds polos/busybox:test (or $TAG): a tiny rootfs made of the static busybox
# from the Debian package busybox-static, applet symlinks, /etc/passwd with the
# non-root sandbox user 1000 ("polos"), /workspace owned by 1000, /tmp 1777.
#
# The rootfs is assembled and imported by Go code (images.BuildBusybox, Docker
# Engine API ImageImport), the same code the docker sandbox tests call, so the
# script and the tests cannot drift apart. No registry, no docker CLI needed.
# Idempotent: does nothing if the image exists (FORCE=1 rebuilds).
set -euo pipefail
cd "$(dirname "$0")/../.."
TAG="${TAG:-polos/busybox:test}"
args=(busybox -tag "$TAG")
if [[ "${FORCE:-}" == 1 ]]; then args+=(-force); fi
exec go run ./images/cmd/polos-images "${args[@]}"
