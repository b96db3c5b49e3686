# dirsync — see README.md. The two commands a newcomer needs: make run, make test.
GO        ?= go
# The toolchain every target builds, tests and lints with: go1.26.8 (this
# machine's) has standard-library vulnerabilities fixed in go1.26.9/10 and
# go1.27 (net/http, crypto/tls, crypto/x509; see docs/security.md). The go
# command fetches this version from the module proxy on first use (~10 s).
export GOTOOLCHAIN := go1.27.3
BIN       := bin/dirsync
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
CONFIG    ?= deployments/local/config.yaml
# Tests start real servers; keep the whole run bounded.
TEST_TIMEOUT ?= 15m

.PHONY: all build run test test-deps unit fuzz bench bench-propagation vet lint vulncheck clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/dirsync

## run: the daemon on the quick-start LDIF directory with the memory cache (API on 127.0.0.1:8080)
run: build
	./$(BIN) run --config $(CONFIG)

## test: every test, including integration tests against real servers (installed with apt-get as root)
test: test-deps
	$(GO) vet ./...
	$(GO) test -race -timeout $(TEST_TIMEOUT) ./...

test-deps:
	@deployments/scripts/install-test-deps

## unit: tests that need no server
unit:
	DIRSYNC_SKIP_INTEGRATION=1 $(GO) test -race -short ./...

## fuzz: each fuzz target for FUZZTIME (default 10s; or a count like 30000x)
FUZZTIME ?= 10s
fuzz:
	@deployments/scripts/fuzz $(FUZZTIME)

## bench: performance figures as ratios to floors measured in the same run (SIZE=10k|100k|1m);
## SCENARIO=tenants: 5,000 API-created accounts x 200 users (TENANTS=, TENANT_USERS= to resize);
## SCENARIO=console: the web console's server time per page at 5,000 accounts
bench: build test-deps
ifeq ($(SCENARIO),tenants)
	$(GO) test -run '^$$' -bench Tenants -benchtime 1x -timeout 4h ./cmd/dirsync/e2e/
else ifeq ($(SCENARIO),console)
	@GO="$(GO)" deployments/scripts/bench-console
else
	@deployments/scripts/bench
endif

## bench-propagation: change → cache latency through the daemon (AD on Samba, Okta on the fake), default 5 s schedule
bench-propagation: test-deps
	$(GO) test -run '^$$' -bench Propagation -benchtime 6x ./cmd/dirsync/e2e/

vet:
	$(GO) vet ./...

## lint: go vet, staticcheck and govulncheck (pinned; fetched by the go command on first use)
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
lint: vet vulncheck
	$(GO) run $(STATICCHECK) ./...

## vulncheck: govulncheck against the pinned Go vulnerability database
vulncheck:
	@deployments/scripts/vulncheck

clean:
	rm -rf bin .bench .cache
