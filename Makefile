# credvault — the two commands a newcomer needs are `make run` and `make test`.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

GO        ?= go
DATA_DIR  ?= .data
PORT      ?= 8080
DIST      := dist
APP       := $(DIST)/app
PKGS      := ./...
BENCHTIME ?= 2s
TOOLS     := .tools
NPM_DIR   := $(TOOLS)/npm
NPM_STAMP := $(NPM_DIR)/.installed

.PHONY: help run build test lint bench package clean tools

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

run: ## serve on the embedded local backends (no Azure account needed)
	CREDVAULT_DATA_DIR=$(DATA_DIR) FUNCTIONS_CUSTOMHANDLER_PORT=$(PORT) $(GO) run ./handler

build: ## build the handler binary for this machine into bin/
	$(GO) build -o bin/handler ./handler

lint: ## gofmt and go vet
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.tools/*')); \
	if [ -n "$$unformatted" ]; then echo "gofmt would change:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet $(PKGS)

test: lint tools ## every test, with the race detector; starts the emulators it needs; the browser test must run
	CREDVAULT_EMULATORS_REQUIRED=1 CREDVAULT_BROWSER_REQUIRED=1 $(GO) test -race -count=1 $(PKGS)
	@echo "The HTTP suite again, on the Azure adapters (Azurite, Cosmos DB emulator, Key Vault fake):"
	CREDVAULT_EMULATORS_REQUIRED=1 CREDVAULT_BROWSER_REQUIRED=1 CREDVAULT_TEST_BACKENDS=azure $(GO) test -race -count=1 ./handler/

tools: $(NPM_STAMP) ## install the test emulators (Azurite, cosmosdb-server) into .tools/, pinned by the lock file, and Debian's chromium for the browser test
	@command -v chromium >/dev/null || { echo "installing Debian's chromium (the browser test's headless browser)"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

$(NPM_STAMP): internal/emulators/package.json internal/emulators/package-lock.json
	mkdir -p $(NPM_DIR)
	cp internal/emulators/package.json internal/emulators/package-lock.json $(NPM_DIR)/
	cd $(NPM_DIR) && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
	touch $@

bench: tools ## the benchmarks (figures for the closing notes); the Azure ones run against the emulators
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./internal/envelope/ ./internal/keyring/ ./internal/store/embedded/
	$(GO) test -run '^$$' -bench . -benchtime 1x ./internal/rotation/
	$(GO) test -run '^$$' -bench 'InProcess|HTTP|ColdStart' -benchmem -benchtime $(BENCHTIME) ./handler/
	$(GO) test -run '^$$' -bench 'Azure/^(get|put)$$' -benchtime $(BENCHTIME) ./handler/
	$(GO) test -run '^$$' -bench 'Azure/keyvault' -benchtime 1x ./handler/

package: ## the deployable Functions app folder and zip (linux/amd64; the handler keeps its execute bit): dist/app, dist/credvault.zip
	$(GO) run ./internal/deploy/cmd/package -out $(DIST) -go $(GO)

clean: ## remove build output and installed tools (not the data dir)
	rm -rf bin $(DIST) $(TOOLS)
