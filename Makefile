# Janitor fleet. Quick start: `make demo` (offline, local Docker) and `make test`.
SHELL := bash
CARGO ?= cargo
ENV ?= dev
REPOS_FILE ?= infra/repos.yaml
CONFIG ?= infra/workers-config.yaml
JANITORCTL := ./target/debug/janitorctl
CTL := $(JANITORCTL) --env $(ENV)
TIMEOUT_FLAG := $(if $(TIMEOUT_MINUTES),--timeout-minutes $(TIMEOUT_MINUTES))

.PHONY: help build demo test lint fmt test-deps validate ci run-janitor validate-all-workers \
	check-parallel-status kill-all-workers query-db query-parallel-run fetch-report

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

validate: build ## Check a config offline: make validate CONFIG=infra/workers-config.yaml
	$(JANITORCTL) validate $(CONFIG)

run-janitor: build ## Validate every repository of REPOS_FILE on the fleet: make run-janitor ENV=dev
	$(CTL) run $(REPOS_FILE) $(TIMEOUT_FLAG)

validate-all-workers: build ## Same with CONFIG: make validate-all-workers ENV=dev CONFIG=… TIMEOUT_MINUTES=45
	$(CTL) run $(CONFIG) $(TIMEOUT_FLAG)

check-parallel-status: build ## The latest run (or RUN_ID=…): jobs, queue, instances
	$(CTL) status $(RUN_ID)

query-parallel-run: build ## A whole run: make query-parallel-run RUN_ID=…
	@test -n "$(RUN_ID)" || { echo "make query-parallel-run: set RUN_ID=… (see make check-parallel-status)" >&2; exit 2; }
	$(CTL) show $(RUN_ID)

query-db: build ## A repository's history: make query-db REPO=worker-basic
	@test -n "$(REPO)" || { echo "make query-db: set REPO=name or REPO=organization/name" >&2; exit 2; }
	$(CTL) results --repo $(REPO)

fetch-report: build ## Download the latest run's reports (or RUN_ID=…) into reports/
	$(CTL) fetch-report $(RUN_ID) --out reports

kill-all-workers: build ## Emergency stop: purge the latest run's jobs, scale to zero, terminate
	$(CTL) kill-all

ci: test-deps test ## What CI runs
