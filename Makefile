# Janitor fleet. Quick start: `make demo` (offline, local Docker) and `make test`.
SHELL := bash
CARGO ?= cargo
ENV ?= dev
JANITORCTL := ./target/debug/janitorctl

.PHONY: help build demo test lint fmt test-deps validate ci

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-22s %s\n", $$1, $$2}'

build: ## Build janitord and janitorctl
	$(CARGO) build --locked --bins

demo: build ## Run examples/demo.yaml through the pipeline on the local Docker, no AWS
	bash scripts/base-image.sh janitor-demo-base:latest
	docker build -q -t janitor-demo-agent:latest examples/agent >/dev/null 2>&1 || docker build -t janitor-demo-agent:latest examples/agent
	$(JANITORCTL) run --local examples/demo.yaml --out reports

test: lint ## Lint, then every test (unit and end-to-end against moto and Docker)
	$(CARGO) test --workspace --locked

lint: ## rustfmt and clippy, warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

test-deps: ## Install what the tests need (busybox-static, git, .venv with moto)
	bash scripts/test-deps.sh

validate: build ## Check a config: make validate CONFIG=infra/workers-config.yaml
	$(JANITORCTL) validate $(or $(CONFIG),infra/workers-config.yaml)

ci: test-deps test ## What CI runs
