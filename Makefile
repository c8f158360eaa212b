# Nectar: `make run` serves the API on 127.0.0.1:5000; `make test` runs every test.
SHELL := /bin/bash
GO    ?= go
BIN   := bin
# The MinIO server the S3 and MinIO tests run against, pinned and cached in the tool folder
# (the first install takes about 4 minutes; targets/miniotest has the same version).
MINIO_VERSION := v0.0.0-20260212201848-7aac2a2c5b7c
MINIO         := .tools/minio-$(MINIO_VERSION)/minio
# nats-server for the multi-process cluster tests (the server embeds the same module): the
# version go.mod requires, built into the tool folder (server/queue/natstest has it too).
NATS_VERSION := v2.15.2
NATS         := .tools/nats-server-$(NATS_VERSION)/nats-server

.DEFAULT_GOAL := help

.PHONY: help generate check-generate build run dev demo-data tools test fuzz bench lint fmt clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-15s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

generate: ## regenerate routes, catalog and plugin mains from chains/<type>/*_chain.go
	$(GO) generate ./...

check-generate: ## fail if the committed generated code is stale
	$(GO) run ./gen -root . -check

# Static binaries, as the image's (tools/deploy/Dockerfile): nothing needs cgo (SQLite is
# modernc's Go), and without libc and its thread stacks a server takes 2-4 MB less memory.
build: generate ## build bin/nectar and one plugin per chain type (static, with its sha256) into bin/plugins/
	@mkdir -p $(BIN)/plugins
	CGO_ENABLED=0 $(GO) build -o $(BIN)/nectar ./tools/nectar
	@rm -f $(BIN)/plugins/*
	@for t in $$(ls plugins/mains); do \
		echo "CGO_ENABLED=0 $(GO) build -o $(BIN)/plugins/$$t ./plugins/mains/$$t"; \
		CGO_ENABLED=0 $(GO) build -o $(BIN)/plugins/$$t ./plugins/mains/$$t || exit 1; \
		(cd $(BIN)/plugins && sha256sum $$t > $$t.sha256) || exit 1; \
	done

run: build ## serve on 127.0.0.1:5000 (NECTAR_ADDR, NECTAR_TARGET, ... override)
	./$(BIN)/nectar serve

dev: build ## serve as make run does, and rebuild a chain's plugin (or the server) on every save under chains/
	./$(BIN)/nectar dev

# The real data of the airline chain: the npm package vega-datasets (3,000,000 US flights of
# 2001-01 to 2001-06 as parquet, and the airports), fetched with npm pack, checked, then put in
# the configured store (NECTAR_TARGET) under datasets/flights/.
DEMO_DATA := .tools/vega-datasets-3.2.1
DEMO_FLIGHTS_SHA256 := dbeb920c90f59b6ccaff823dcc3d08f25a97fa1ce128d93f40be4e931f5900b0
DEMO_AIRPORTS_SHA256 := 903c7169e6d558eefb95295fe2947ec8503135fbb855ea5c737cf4a90ea603ad

DEMO_FILES := $(DEMO_DATA)/package/data/flights-3m.parquet

$(DEMO_FILES):
	@command -v npm >/dev/null || { echo "installing Debian's npm (the flight data is fetched with npm pack)"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq npm; }
	@mkdir -p $(DEMO_DATA)
	cd $(DEMO_DATA) && npm pack --silent vega-datasets@3.2.1 >/dev/null && \
		tar xzf vega-datasets-3.2.1.tgz package/data/flights-3m.parquet package/data/airports.csv && rm vega-datasets-3.2.1.tgz
	@printf '%s  %s\n%s  %s\n' $(DEMO_FLIGHTS_SHA256) $(DEMO_DATA)/package/data/flights-3m.parquet \
		$(DEMO_AIRPORTS_SHA256) $(DEMO_DATA)/package/data/airports.csv | sha256sum -c --quiet || { rm -f $@; exit 1; }

demo-data: build $(DEMO_FILES) ## fetch the real flight data (npm vega-datasets 3.2.1) and put it in the store under datasets/flights/
	./$(BIN)/nectar put $(DEMO_DATA)/package/data/flights-3m.parquet datasets/flights/flights-3m.parquet
	./$(BIN)/nectar put $(DEMO_DATA)/package/data/airports.csv datasets/flights/airports.csv

# PostgreSQL 15 for the run-history tests (they start a throwaway cluster of their own), from
# Debian's packages when the machine lacks it.
PG_BIN := /usr/lib/postgresql/15/bin

# Chromium for the browser tests of the web UI, from Debian's packages when missing.
CHROMIUM := /usr/bin/chromium

# strace counts the server's system calls per task (a test and make bench), from Debian.
STRACE := /usr/bin/strace

# nginx stands in front of the server in the reverse-proxy test (README: behind a proxy), from Debian.
NGINX := /usr/sbin/nginx

tools: $(MINIO) $(NATS) $(PG_BIN)/initdb $(CHROMIUM) $(STRACE) $(NGINX) ## install the pinned MinIO and nats-server into .tools/ and, if missing, Debian's PostgreSQL 15, Chromium, strace and nginx

$(PG_BIN)/initdb:
	@echo "installing Debian's postgresql-15 (the run-history tests start their own cluster from it)"
	@if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql-15

$(CHROMIUM):
	@echo "installing Debian's chromium (the web UI's browser tests drive it headless)"
	@if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium

$(STRACE):
	@echo "installing Debian's strace (it counts the system calls of a fan-in's tasks)"
	@if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq strace

$(NGINX):
	@echo "installing Debian's nginx-light (the reverse-proxy test puts it in front of the server)"
	@if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $$SUDO apt-get install -y -qq nginx-light

$(MINIO):
	@echo "installing MinIO $(MINIO_VERSION) into $(dir $(MINIO)) (about 4 minutes the first time)"
	GOBIN=$(CURDIR)/$(dir $(MINIO)) $(GO) install github.com/minio/minio@$(MINIO_VERSION)

$(NATS):
	@echo "installing nats-server $(NATS_VERSION) into $(dir $(NATS))"
	GOBIN=$(CURDIR)/$(dir $(NATS)) $(GO) install github.com/nats-io/nats-server/v2@$(NATS_VERSION)

test: lint tools ## lint, then every test (real plugins, MinIO, PostgreSQL, headless Chromium; the server package under -race) and a short fuzz of each parser
	@# ./server runs once, under -race and not also without it: its tests drive concurrent runs,
	@# restarts and kill -9 of the real binary, where a data race or an ordering assumption shows
	@# (issue 9). About 10 s more than without -race; the other packages stay plain.
	NECTAR_MINIO_BIN=$(CURDIR)/$(MINIO) $(GO) test -count=1 -timeout 20m $$($(GO) list ./... | grep -vx nectar/server)
	NECTAR_MINIO_BIN=$(CURDIR)/$(MINIO) $(GO) test -race -count=1 -timeout 20m ./server
	@# And once more with tasks executed by the server that drives the run, without the queue
	@# (NECTAR_DISPATCH=direct, kept to compare): both dispatch paths pass the same suite.
	NECTAR_DISPATCH=direct NECTAR_MINIO_BIN=$(CURDIR)/$(MINIO) $(GO) test -race -count=1 -timeout 20m ./server
	@# Fuzz runs are counted, not timed: a timed -fuzztime can end in "context deadline exceeded".
	$(GO) test -run '^$$' -fuzz FuzzQueryParsing -fuzztime 100000x ./chains/params
	NECTAR_MINIO_BIN=$(CURDIR)/$(MINIO) $(GO) test -run '^$$' -fuzz FuzzParseStatusChain -fuzztime 20000x ./server
	$(GO) test -run '^$$' -fuzz FuzzVerify -fuzztime 300000x ./server/signing

fuzz: tools ## fuzz each network-facing parser for 2 minutes
	$(GO) test -run '^$$' -fuzz FuzzQueryParsing -fuzztime 2m ./chains/params
	NECTAR_MINIO_BIN=$(CURDIR)/$(MINIO) $(GO) test -run '^$$' -fuzz FuzzParseStatusChain -fuzztime 2m ./server
	$(GO) test -run '^$$' -fuzz FuzzVerify -fuzztime 2m ./server/signing

bench: build tools $(DEMO_FILES) ## Go benchmarks, then the end-to-end table (real binary, local and MinIO targets, load driver at 16 connections, the airline chain on the real flights)
	NECTAR_MINIO_BIN=$(CURDIR)/$(MINIO) $(GO) test -run '^$$' -bench 'SingleRun|FanIn' -benchtime 20x ./server
	NECTAR_MINIO_BIN=$(CURDIR)/$(MINIO) $(GO) test -run '^$$' -bench 'CacheHit|StatusGet' -benchtime 2s -benchmem ./server
	NECTAR_MINIO_BIN=$(CURDIR)/$(MINIO) $(GO) run ./tools/bench

lint: ## generated code up to date, gofmt, vet, staticcheck, go mod tidy -diff
	$(GO) run ./gen -root . -check
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...
	$(GO) tool staticcheck ./...
	$(GO) mod tidy -diff

fmt: ## gofmt the tree
	gofmt -w $$(git ls-files '*.go')

clean: ## remove build output and what an interrupted bench left (keeps local_targets)
	rm -rf $(BIN) .bench-scratch
