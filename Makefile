# Roomcast: the two commands are `make run` and `make test`.
CARGO ?= cargo
TOOLS := $(CURDIR)/.tools

.PHONY: run demo-cluster bench test deps fmt lint unit js chart e2e build release clean help

help:
	@echo "make run    start a gateway on 127.0.0.1:8080 (admin 127.0.0.1:9090) with the demo page"
	@echo "make test   install what the tests need, then fmt, clippy and every test"
	@echo "make demo-cluster   nats-server + two gateways on 8080 and 8081"
	@echo "make bench  benchmarks against the Node.js baseline, into docs/benchmarks.md"

## Start one gateway on the in-process bus, with its demo page at http://127.0.0.1:8080/;
## rooms without ':' keep their last 100 messages for an hour (in memory).
run:
	$(CARGO) run --release --locked -p roomcast-gateway -- --listen 127.0.0.1:8080 --admin-listen 127.0.0.1:9090 \
	  --namespace ':history_size=100,history_ttl_seconds=3600'

## A local nats-server and two gateways (8080/8081, admin 9090/9091), to watch messages cross gateways.
demo-cluster: deps
	$(CARGO) build --release --locked -p roomcast-gateway
	scripts/demo-cluster

## Benchmarks: Roomcast (2 gateways + NATS) against the Node.js baseline; writes docs/benchmarks.md.
bench: deps
	$(CARGO) build --release --locked -p roomcast-gateway -p roomcast-bench
	scripts/bench

## Everything CI runs.
test: deps fmt lint unit js chart

deps:
	@scripts/install-deps

fmt:
	$(CARGO) fmt --all --check

lint:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

unit:
	$(CARGO) build --locked --bins -p roomcast-gateway -p roomcast-operator
	PATH="$(TOOLS)/bin:$$PATH" $(CARGO) nextest run --workspace --locked --profile ci
	$(CARGO) test --workspace --doc --locked

## @roomcast/client (clients/js): build, bundle freshness, unit, integration and browser tests.
js:
	$(CARGO) build --locked --bins -p roomcast-gateway
	PATH="$(TOOLS)/bin:$$PATH" scripts/check-js

## Helm chart: lint, render against the Kubernetes API stand-in, validate every object.
chart:
	scripts/check-chart

## Operator end-to-end suite (part of `make test`, against the API stand-in); against a
## real cluster: `make e2e KUBECONFIG=<file>` (only a KUBECONFIG given on the command line counts).
e2e:
	$(CARGO) build --locked --bins -p roomcast-gateway -p roomcast-operator
	$(if $(filter command line,$(origin KUBECONFIG)),ROOMCAST_E2E_KUBECONFIG=$(KUBECONFIG)) $(CARGO) nextest run --locked --profile ci -p roomcast-e2e

build:
	$(CARGO) build --workspace --locked

release:
	$(CARGO) build --workspace --release --locked

clean:
	$(CARGO) clean
	rm -rf $(TOOLS)
