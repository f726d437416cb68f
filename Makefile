# slipway's developer commands. `make run` and `make test` are the two that
# matter; both start with `make deps`, which installs what a fresh Debian 12
# machine lacks and is quick when nothing does.
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin
GO ?= go

.PHONY: all help deps build run test lint bench fuzz clean

all: build

## help: this list of targets
help:
	@sed -n 's/^## //p' $(MAKEFILE_LIST)

## deps: Debian packages, arm64 emulation, busybox debs, bin/buildkitd, bin/buildctl, bin/gitea and bin/kube-apiserver
deps:
	@bash scripts/deps.sh

## build: bin/slipway
build:
	$(GO) build -o bin/slipway ./cmd/slipway

## run: services under .slipway-dev (scripts/services.sh: test/cmd/devstack), a demo repository, then `slipway dev` on 127.0.0.1:8080
run: deps build
	@bash scripts/run.sh

## test: go test ./... against real PostgreSQL, registry and buildkitd on free ports
test: deps
	@bash scripts/test.sh

## lint: gofmt, go vet and staticcheck (pinned) over every module; CI runs it
lint:
	@bash scripts/lint.sh

## bench: the Go benchmarks and slipbench (webhook intake, pickup latency) against real services; ends with one table: each figure, its same-run baseline, its target
bench: deps
	@bash scripts/bench.sh

## fuzz: every fuzz target of FUZZPKGS for FUZZTIME each (not part of make test,
## which runs only their seeds and the corpus in testdata/fuzz). Minimizing is kept
## short: the seeds are whole webhook payloads, slow to shrink.
FUZZTIME ?= 30s
FUZZPKGS ?= ./forge
fuzz:
	@set -e; for pkg in $(FUZZPKGS); do \
		targets=$$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); \
		if [ -z "$$targets" ]; then echo "fuzz: $$pkg has no fuzz targets (FUZZPKGS names the packages that do)" >&2; exit 1; fi; \
		for t in $$targets; do \
			echo "fuzz: $$pkg $$t for $(FUZZTIME)"; \
			$(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 2s $$pkg; \
		done; \
	done

## clean: stop and delete the make run state folder (SLIPWAY_DEV_STATE, default .slipway-dev), delete bin/ (the busybox debs in .cache stay)
clean:
	@bash scripts/services.sh purge "$${SLIPWAY_DEV_STATE:-.slipway-dev}"
	rm -rf bin
