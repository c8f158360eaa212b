# Nectar: `make run` serves the API on 127.0.0.1:5000; `make test` runs every test.
SHELL := /bin/bash
GO    ?= go
BIN   := bin
TYPES := $(notdir $(patsubst %/,%,$(dir $(wildcard plugins/mains/*/main_gen.go))))

.DEFAULT_GOAL := help

.PHONY: help generate check-generate build run test bench lint fmt clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-15s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

generate: ## regenerate routes, catalog and plugin mains from chains/<type>/*_chain.go
	$(GO) generate ./...

check-generate: ## fail if the committed generated code is stale
	$(GO) run ./gen -root . -check

build: generate ## build bin/nectar and one plugin per chain type into bin/plugins/
	@mkdir -p $(BIN)/plugins
	$(GO) build -o $(BIN)/nectar ./tools/nectar
	@for t in $$(ls plugins/mains); do \
		echo "$(GO) build -o $(BIN)/plugins/$$t ./plugins/mains/$$t"; \
		$(GO) build -o $(BIN)/plugins/$$t ./plugins/mains/$$t || exit 1; \
	done

run: build ## serve on 127.0.0.1:5000 (NECTAR_ADDR, NECTAR_TARGET, ... override)
	./$(BIN)/nectar serve

test: ## check generated code, vet, and run every test (real plugin processes)
	$(GO) run ./gen -root . -check
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m ./...

bench: build ## run the benchmarks and print the results table
	$(GO) run ./tools/bench

lint: ## gofmt, vet, staticcheck, go mod tidy -diff
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...
	$(GO) tool staticcheck ./...
	$(GO) mod tidy -diff

fmt: ## gofmt the tree
	gofmt -w $$(git ls-files '*.go')

clean: ## remove build output (keeps local_targets)
	rm -rf $(BIN)
