# Polos. The README's two quickstart commands are `make demo` and `make test`.
GO      ?= go
BIN     ?= bin
PKGS    ?= ./...
# Debian packages the tests need beyond Go (mk/testdeps.sh checks or installs them).
TESTDEPS = busybox-static chromium curl

.PHONY: all build test chaos demo bench gobench lint images-test clean help

all: build

## build: the polosd and polos binaries, in $(BIN)/
build:
	$(GO) build -o $(BIN)/ ./cmd/polosd ./cmd/polos

## test: vet, the whole test suite, then the core again with the history cache off and with group commit on (checks or installs what the tests need first: mk/testdeps.sh)
test:
	mk/testdeps.sh $(TESTDEPS)
	$(GO) vet $(PKGS) && $(GO) test -count=1 -timeout 40m $(PKGS) && POLOS_CACHE_OFF=1 $(GO) test -count=1 -timeout 20m . ./executor/... ./client/... && POLOS_GROUP_COMMIT=1 $(GO) test -count=1 -timeout 20m .

## chaos: the fault suite and its table (FULL=1: full size; `make test` runs it at CI size)
CHAOS_TESTS = TestKill9ExecutorsMidStep|TestChaos|TestTenThousandClientCallsLeakNothing|TestRecordedDecisionsAlwaysMoveTheirRuns|TestShutdownHandsRunsOverAtOnce|TestFullDisk|TestAppendWaitsOut|TestGroupCommitWaitsOut
chaos:
	@rm -f $(BIN)/chaos.md; mkdir -p $(BIN)
	POLOS_CHAOS_TABLE=$(abspath $(BIN))/chaos.md POLOS_CHAOS_FULL=$(if $(FULL),1,) $(GO) test -count=1 -timeout 60m -run '^($(CHAOS_TESTS))' . ./events ./embed ./cmd/polos
	@echo; echo "| fault | runs | faults | in flight | lost | re-run | stuck | recovery p50 | p99 | note |"; echo "|---|---|---|---|---|---|---|---|---|---|"; cat $(BIN)/chaos.md

## demo: the offline demo end to end (scripted model, local sandbox, an approval)
demo: build
	BIN=$(BIN) examples/demo/demo.sh

## bench: polos bench --quick (the JetStream floor and Polos, fsync on, one run)
bench: build
	$(BIN)/polos bench --quick

## gobench: every Go benchmark of the repository
gobench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

## lint: gofmt and go vet
lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

# Sandbox images (image-busybox, image-node, images) come from mk/images.mk.
-include mk/images.mk

## images-test: the docker images the tests need
images-test:
	@if [ -f mk/images.mk ]; then $(MAKE) --no-print-directory image-busybox; else echo "mk/images.mk not present: no test images to build"; fi

clean:
	rm -rf $(BIN)

help:
	@grep -h '^## ' $(MAKEFILE_LIST) | sed 's/^## /  /'
