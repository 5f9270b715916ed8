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
LOCAL_LOCK    := worker/requirements-local.txt
DEV_LOCK      := requirements-dev.txt

.PHONY: help demo test lint unit manifests render validate docs bench lock oldest newest image kind-up kind-down \
        deploy e2e e2e-flux e2e-docker kustomize alert-rules clean

help: ## List the targets and the docs
	@awk -v image='$(IMAGE)' 'BEGIN {FS = ":.*## "} /^[a-z0-9-]+:.*## / \
	  {gsub(/\$$\(IMAGE\)/, image, $$2); printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo
	@echo "Docs: README.md first, then one page per question:"
	@awk 'FNR == 1 {sub(/^# /, ""); printf "  %-28s %s\n", FILENAME, $$0}' docs/*.md

# The venv holds exactly the locks (scripts/lock.sh): pip checks every hash, and ./worker is
# installed without its dependencies and without build isolation, so nothing unlocked comes in.
# A changed lock rebuilds the venv from scratch, so nothing an older lock brought stays behind.
# The venv's setup says what it does on stderr: `make render > x.yaml` writes only YAML, even
# on a first run.
$(RUNTIME_STAMP): worker/pyproject.toml $(LOCAL_LOCK) $(DEV_LOCK)
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is required, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	@echo "Setting up $(VENV): the worker package and its locked dependencies ($(LOCAL_LOCK))" >&2
	@$(PYTHON) -m venv --clear $(VENV) >&2
	@$(BIN)/pip install --quiet --require-hashes --no-deps -r $(LOCAL_LOCK) >&2
	@$(BIN)/pip install --quiet --no-deps --no-build-isolation -e ./worker >&2
	@touch $@

$(DEV_STAMP): $(RUNTIME_STAMP)
	@echo "Setting up $(VENV): the development tools ($(DEV_LOCK))" >&2
	@$(BIN)/pip install --quiet --require-hashes --no-deps -r $(DEV_LOCK) >&2
	@touch $@

demo: $(RUNTIME_STAMP) ## Run the whole system locally: embedded Redis, seed, 2 workers; Redis stays up
	$(BIN)/rediswq local --items seed/items.txt --workers 2 --keep

test: lint unit manifests e2e-docker ## Lint, then every test that can run on this machine

lint: $(DEV_STAMP) ## ruff, mypy --strict, actionlint, shellcheck, shfmt, yamllint
	$(BIN)/ruff check worker e2e examples testing
	$(BIN)/ruff format --check worker e2e examples testing
	$(BIN)/mypy worker/src worker/tests worker/bench worker/root_backend.py examples/thumbnails testing
	# Apart: each test tree has its own conftest module.
	$(BIN)/mypy e2e
	$(BIN)/actionlint
	$(BIN)/shellcheck .ci/run $$(git ls-files '*.sh')
	$(BIN)/shfmt -i 2 -d $$(git ls-files '*.sh')
	$(BIN)/yamllint --strict .

# In parallel, a process per core (pytest-xdist): each process starts its own servers, and each
# test uses its own queue. PYTEST_ARGS="-n 0" runs them one by one.
unit: $(DEV_STAMP) ## Worker tests against real Redis servers
	$(BIN)/pytest -n auto worker/tests $(PYTEST_ARGS)

manifests: $(DEV_STAMP) ## Render every overlay, validate the schemas, check the objects; e2e's unit tests
	$(BIN)/pytest -m "not kind and not docker and not flux" e2e $(PYTEST_ARGS)

render: $(DEV_STAMP) ## Print the rendered manifests of OVERLAY (default dev)
	@scripts/kustomize.sh build overlays/$(OVERLAY)

validate: $(DEV_STAMP) ## Validate every overlay and component: Kubernetes schemas, CRD schemas
	scripts/validate.sh

docs: $(RUNTIME_STAMP) ## Write the tables of docs/configuration.md from the CLI's settings
	$(BIN)/python -m rediswq.cli.reference docs/configuration.md

# Progress on stderr as each run ends; the table goes to bench-results.md (untracked), or with
# BENCH_RECORD=1 to docs/benchmarks.md. BENCH_ARGS passes options (--against REV, --workers 2,
# --instructions: valgrind's count of each side's instructions per item).
BENCH_OUTPUT := $(if $(filter 1,$(BENCH_RECORD)),docs/benchmarks.md,bench-results.md)
bench: $(RUNTIME_STAMP) ## Cost per item against the tutorial and a reference loop; BENCH_RECORD=1 records it
	$(BIN)/python worker/bench/bench.py --output $(BENCH_OUTPUT) $(BENCH_ARGS)

lock: $(DEV_STAMP) ## Re-resolve every lock, with hashes: the venv's, the image's, the example's
	scripts/lock.sh

oldest: $(DEV_STAMP) ## The worker's tests on the oldest versions its dependency ranges allow
	scripts/drift.sh $@ $(PYTEST_ARGS)

newest: $(DEV_STAMP) ## mypy and the worker's tests on the newest versions its ranges allow
	scripts/drift.sh $@ $(PYTEST_ARGS)

alert-rules: $(DEV_STAMP) ## Write components/metrics/prometheusrule.yaml from alerts.rules.yaml
	cd e2e && $(CURDIR)/$(BIN)/python alertrules.py

kustomize: ## Fetch the pinned kustomize (checksummed) into .cache/kustomize; print its path
	@scripts/kustomize.sh bin

# The builder is found as the container e2e finds it: docker buildx, an older docker, or podman.
# PYTHON_IMAGE: another base than the Dockerfile's pinned one, e.g. a copy in a registry you reach.
image: ## Build the worker image $(IMAGE) from worker/Dockerfile (BuildKit; PYTHON_IMAGE: another base)
	scripts/build-image.sh $(IMAGE) worker $(if $(PYTHON_IMAGE),PYTHON_IMAGE=$(PYTHON_IMAGE))

kind-up: $(DEV_STAMP) ## Create the kind cluster and load the worker image
	scripts/kind.sh up $(KIND_CLUSTER) $(IMAGE)

kind-down: ## Delete the kind cluster
	scripts/kind.sh down $(KIND_CLUSTER)

deploy: $(DEV_STAMP) ## Apply OVERLAY to CONTEXT (default: current); replaces only Jobs whose spec changed
	CONTEXT="$(CONTEXT)" scripts/deploy.sh overlays/$(OVERLAY)

e2e: $(DEV_STAMP) ## End-to-end on kind (E2E_CLUSTER=current: the current context); fails without one
	$(BIN)/pytest -m kind e2e $(PYTEST_ARGS)

e2e-flux: $(DEV_STAMP) ## Flux on kind reconciles clusters/dev/flux from a local OCI registry; fails without flux
	$(BIN)/pytest -m flux e2e $(PYTEST_ARGS)

e2e-docker: $(DEV_STAMP) ## End-to-end as containers on a local Docker engine (skips without one)
	$(BIN)/pytest -m docker e2e $(PYTEST_ARGS)

clean: ## Remove the virtual environment and caches
	rm -rf $(VENV) .venv-oldest .venv-newest .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
