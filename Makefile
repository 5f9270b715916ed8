# Everything runs from a local virtual environment (.venv); nothing is installed globally.
# No .SHELLFLAGS: GNU make 3.81 (macOS) ignores it. Each recipe line is its own `bash -c`, make
# stops at the first line that fails, and a line with a pipeline sets pipefail itself.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON   ?= python3
VENV     := .venv
BIN      := $(VENV)/bin
OVERLAY  ?= dev
OVERLAYS := $(notdir $(patsubst %/,%,$(dir $(wildcard overlays/*/kustomization.yaml))))
IMAGE    ?= job-wq-2:dev
KIND_CLUSTER ?= job-wq-2
NAMESPACE    ?= job-wq-2
# Empty: the current kubeconfig context (the dev overlay then only to a kind-* context).
CONTEXT      ?=
PYTEST_ARGS  ?=

# The venv's tools (kubectl, kind, shellcheck) come first for every recipe and script.
export PATH := $(CURDIR)/$(BIN):$(PATH)

RUNTIME_STAMP := $(VENV)/.runtime
DEV_STAMP     := $(VENV)/.dev

.PHONY: help demo test lint unit manifests render validate bench lock image kind-up kind-down \
        deploy e2e e2e-flux e2e-docker kustomize clean

help: ## List the targets
	@awk -v image='$(IMAGE)' 'BEGIN {FS = ":.*## "} /^[a-z0-9-]+:.*## / \
	  {gsub(/\$$\(IMAGE\)/, image, $$2); printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# The venv's setup says what it does on stderr: `make render > x.yaml` writes only YAML, even
# on a first run.
$(RUNTIME_STAMP): worker/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is required, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	@echo "Setting up $(VENV): the worker package and its dependencies" >&2
	@$(PYTHON) -m venv $(VENV) >&2
	@$(BIN)/pip install --quiet --upgrade pip >&2
	@$(BIN)/pip install --quiet -e './worker[local]' >&2
	@touch $@

$(DEV_STAMP): $(RUNTIME_STAMP) requirements-dev.txt
	@echo "Setting up $(VENV): the development tools (requirements-dev.txt)" >&2
	@$(BIN)/pip install --quiet -r requirements-dev.txt >&2
	@touch $@

demo: $(RUNTIME_STAMP) ## Run the whole system locally: embedded Redis, seed, 2 workers
	$(BIN)/rediswq local --items seed/items.txt --workers 2

test: lint unit manifests e2e-docker ## Lint, then every test that can run on this machine

lint: $(DEV_STAMP) ## ruff, mypy --strict, actionlint, shellcheck, shfmt, yamllint
	$(BIN)/ruff check worker e2e examples
	$(BIN)/ruff format --check worker e2e examples
	$(BIN)/mypy worker/src worker/tests worker/bench worker/root_backend.py examples/thumbnails
	# Apart: each test tree has its own conftest module.
	$(BIN)/mypy e2e
	$(BIN)/actionlint
	$(BIN)/shellcheck .ci/run $$(git ls-files '*.sh')
	$(BIN)/shfmt -i 2 -d $$(git ls-files '*.sh')
	$(BIN)/yamllint --strict .

unit: $(DEV_STAMP) ## Worker tests against real Redis servers
	$(BIN)/pytest worker/tests $(PYTEST_ARGS)

manifests: $(DEV_STAMP) ## Render every overlay, validate the schemas, check the objects; e2e's unit tests
	$(BIN)/pytest -m "not kind and not docker and not flux" e2e $(PYTEST_ARGS)

render: $(DEV_STAMP) ## Print the rendered manifests of OVERLAY (default dev)
	@scripts/kustomize.sh build overlays/$(OVERLAY)

validate: $(DEV_STAMP) ## Validate every overlay and component: Kubernetes schemas, CRD schemas
	scripts/validate.sh

bench: $(RUNTIME_STAMP) ## Throughput against the tutorial's client; writes docs/benchmarks.md
	$(BIN)/python worker/bench/bench.py --output docs/benchmarks.md

lock: $(DEV_STAMP) ## Re-pin worker/requirements.txt: the image's packages, with hashes
	set -o pipefail; cd worker && $(CURDIR)/$(BIN)/python -c 'import tomllib; \
	  print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")' \
	| UV_CUSTOM_COMPILE_COMMAND="make lock" $(CURDIR)/$(BIN)/uv pip compile --quiet --upgrade \
	  --universal --python-version 3.11 --generate-hashes -o requirements.txt pyproject.toml -

kustomize: ## Fetch the pinned kustomize (checksummed) into .cache/kustomize; print its path
	@scripts/kustomize.sh bin

image: ## Build the worker image $(IMAGE) from worker/Dockerfile (needs BuildKit)
	DOCKER_BUILDKIT=1 docker build -t $(IMAGE) worker

kind-up: $(DEV_STAMP) ## Create the kind cluster and load the worker image
	scripts/kind.sh up $(KIND_CLUSTER) $(IMAGE)

kind-down: ## Delete the kind cluster
	scripts/kind.sh down $(KIND_CLUSTER)

deploy: $(DEV_STAMP) ## Apply OVERLAY to CONTEXT (default: current); replaces only Jobs whose spec changed
	CONTEXT="$(CONTEXT)" scripts/deploy.sh overlays/$(OVERLAY)

e2e: $(DEV_STAMP) ## End-to-end on kind (E2E_CLUSTER=current: the current context): deploy, assert logs
	$(BIN)/pytest -m kind e2e $(PYTEST_ARGS)

e2e-flux: $(DEV_STAMP) ## Flux on kind reconciles clusters/dev/flux from a local OCI registry (needs flux)
	$(BIN)/pytest -m flux e2e $(PYTEST_ARGS)

e2e-docker: $(DEV_STAMP) ## End-to-end as containers on a local Docker engine (skips without one)
	$(BIN)/pytest -m docker e2e $(PYTEST_ARGS)

clean: ## Remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
