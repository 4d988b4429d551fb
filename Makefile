# Janitor fleet. Quick start: `make demo` (offline, local Docker) and `make test`.
SHELL := bash
CARGO ?= cargo
ENV ?= dev
REPOS_FILE ?= infra/repos.yaml
CONFIG ?= infra/workers-config.yaml
JANITORCTL := ./target/debug/janitorctl
CTL := $(JANITORCTL) --env $(ENV)
TIMEOUT_FLAG := $(if $(TIMEOUT_MINUTES),--timeout-minutes $(TIMEOUT_MINUTES))

TF_DIR := infra/terraform
AWS_ENV := -e AWS_PROFILE -e AWS_REGION -e AWS_ACCESS_KEY_ID -e AWS_SECRET_ACCESS_KEY -e AWS_SESSION_TOKEN -v $(HOME)/.aws:/root/.aws:ro
# The real tools run in their official containers where Docker is available, else from the host.
DOCKER_OK := $(shell docker info >/dev/null 2>&1 && echo yes)
ifeq ($(DOCKER_OK),yes)
TERRAFORM ?= docker run --rm -i $(AWS_ENV) -v $(CURDIR):/src -w /src hashicorp/terraform:1.11
PACKER ?= docker run --rm -i $(AWS_ENV) -v $(CURDIR):/src -w /src hashicorp/packer:1.11
else
TERRAFORM ?= terraform
PACKER ?= packer
endif
AGENT_REPO ?= janitor-agent

.PHONY: help build demo test lint fmt test-deps validate ci run-janitor validate-all-workers \
	check-parallel-status kill-all-workers query-db query-parallel-run fetch-report \
	infra-check image ami infra-init infra-plan infra-apply destroy

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-22s %s\n", $$1, $$2}'

build: ## Build janitord and janitorctl
	$(CARGO) build --locked --bins

demo: build ## Run examples/demo.yaml through the pipeline on the local Docker, no AWS
	@bash scripts/test-deps.sh demo
	bash scripts/base-image.sh janitor-demo-base:latest
	bash scripts/runpod-image.sh
	docker build -q -t janitor-demo-agent:latest examples/agent >/dev/null 2>&1 || docker build -t janitor-demo-agent:latest examples/agent
	$(JANITORCTL) run --local examples/demo.yaml --out reports

test: test-deps lint infra-check ## Install what the tests need, lint, offline infrastructure checks, then every test (unit and end-to-end against moto and Docker)
	$(CARGO) test --workspace --locked

infra-check: test-deps ## Offline checks of Terraform, Packer, systemd units and shell scripts
	.venv/bin/pytest -q -rs infra/tests

lint: ## rustfmt and clippy, warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

test-deps: ## Install what the tests need (busybox-static, mmdebstrap, git, .venv with moto, the runpod base image); idempotent
	@bash scripts/test-deps.sh

validate: build ## Check a config offline: make validate CONFIG=infra/workers-config.yaml
	$(JANITORCTL) validate $(CONFIG)

run-janitor: build ## Validate every repository of REPOS_FILE (or of ORG=runpod-workers, REPOS_FILE then overrides) on the fleet: make run-janitor ENV=dev
	$(CTL) run $(if $(ORG),--org $(ORG) $(if $(filter command line environment,$(origin REPOS_FILE)),$(REPOS_FILE)),$(REPOS_FILE)) $(TIMEOUT_FLAG) $(CTL_FLAGS)

validate-all-workers: build ## Same with CONFIG: make validate-all-workers ENV=dev CONFIG=… TIMEOUT_MINUTES=45
	$(CTL) run $(CONFIG) $(TIMEOUT_FLAG) $(CTL_FLAGS)

check-parallel-status: build ## The latest run (or RUN_ID=…): jobs, queue, instances
	$(CTL) status $(RUN_ID)

query-parallel-run: build ## A whole run: make query-parallel-run RUN_ID=…
	@test -n "$(RUN_ID)" || { echo "make query-parallel-run: set RUN_ID=… (see make check-parallel-status)" >&2; exit 2; }
	$(CTL) show $(RUN_ID)

query-db: build ## A repository's history: make query-db REPO=worker-basic [LIMIT=20] [SINCE=7d]
	@test -n "$(REPO)" || { echo "make query-db: set REPO=name or REPO=organization/name" >&2; exit 2; }
	$(CTL) results --repo $(REPO) $(if $(LIMIT),--limit $(LIMIT)) $(if $(SINCE),--since $(SINCE))

fetch-report: build ## Download the latest run's reports (or RUN_ID=…) into reports/
	$(CTL) fetch-report $(RUN_ID) --out reports

kill-all-workers: build ## Emergency stop: purge the latest run's jobs, scale to zero, terminate
	$(CTL) kill-all

ci: test ## What CI runs

image: ## Build janitor's agent image (agent/: Claude Code, headless) and push it to ECR (AGENT_REPO, AWS_REGION)
	@account=$$(aws sts get-caller-identity --query Account --output text) && \
	region=$${AWS_REGION:-us-east-1} && registry=$$account.dkr.ecr.$$region.amazonaws.com && \
	aws ecr describe-repositories --repository-names $(AGENT_REPO) >/dev/null 2>&1 || aws ecr create-repository --repository-name $(AGENT_REPO) --image-scanning-configuration scanOnPush=true >/dev/null && \
	aws ecr get-login-password --region $$region | docker login --username AWS --password-stdin $$registry && \
	AGENT_BASE=python:3.12-slim-bookworm bash scripts/agent-image.sh $$registry/$(AGENT_REPO):latest && docker push $$registry/$(AGENT_REPO):latest

ami: ## Build the golden GPU AMI with Packer (prints the AMI id for infra/env/ENV.tfvars)
	$(CARGO) build --release --locked --bin janitord
	$(PACKER) init packer/gpu-ami.pkr.hcl
	$(PACKER) build -var env=$(ENV) packer/gpu-ami.pkr.hcl

infra-init:
	$(TERRAFORM) -chdir=$(TF_DIR) init -input=false -reconfigure -backend-config=../env/$(ENV).backend.hcl

infra-plan: infra-init ## terraform plan for ENV
	$(TERRAFORM) -chdir=$(TF_DIR) plan -input=false -var-file=../env/$(ENV).tfvars -out=$(ENV).tfplan

infra-apply: infra-plan ## terraform apply for ENV, then write infra/env/ENV.json for janitorctl
	$(TERRAFORM) -chdir=$(TF_DIR) apply -input=false $(ENV).tfplan
	$(TERRAFORM) -chdir=$(TF_DIR) output -json > infra/env/$(ENV).json
	@echo "wrote infra/env/$(ENV).json"

destroy: infra-init ## Remove everything of ENV, the ledger bucket with every report in it
	-$(JANITORCTL) --env $(ENV) kill-all --all
	@# The ledger is versioned: removing its objects leaves every version behind. Told
	@# ledger_force_destroy, Terraform deletes the bucket with all of them.
	$(TERRAFORM) -chdir=$(TF_DIR) apply -input=false -auto-approve -var-file=../env/$(ENV).tfvars -var ledger_force_destroy=true -target=aws_s3_bucket.ledger
	$(TERRAFORM) -chdir=$(TF_DIR) destroy -input=false -var-file=../env/$(ENV).tfvars -var ledger_force_destroy=true
