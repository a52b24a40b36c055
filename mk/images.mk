# Sandbox images, built from Debian packages without a registry (see images/).
# Included by the top-level Makefile; paths are relative to the repository root.
.PHONY: images image-busybox image-node

## images: build every sandbox image (busybox for tests, node for the examples)
images: image-busybox image-node

## image-busybox: polos/busybox:test from busybox-static (seconds; tests build it themselves)
image-busybox:
	images/busybox/build.sh

## image-node: polos/node:20 from debootstrap + Node.js 20 (minutes, root)
image-node:
	images/node/build.sh
