# The verbs a newcomer looks for. Every target sets up what it needs (virtual environment, installs).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help venv test test-unit test-integration test-infra lint format up down status ui demo cli benchmark throughput soak synth bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

BUILD_REQUIRES = $(shell $(PYTHON) -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['build-system']['requires'])")

$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.lock $(BUILD_REQUIRES)
	@# The project's own packages, editable (imports read the working tree); its build backend is the
	@# pinned setuptools just installed, so nothing is fetched.
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $(STAMP)

venv: $(STAMP) ## create .venv, install the pinned dependencies and the project (editable)

test: $(STAMP) ## lint, then every test (unit, integration on loopback servers, infrastructure)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest

test-unit: $(STAMP) ## unit tests only
	$(PY) -m pytest tests/unit

test-integration: $(STAMP) ## integration tests only (starts its own servers)
	$(PY) -m pytest tests/integration

test-infra: $(STAMP) ## CDK synth, assertions, cdk-nag, cfn-lint
	$(PY) -m pytest tests/infra

lint: $(STAMP) ## ruff
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP) ## ruff fix + format
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

up: $(STAMP) ## start the local stack (moto, MLflow, Bedrock emulator, event pump) and wait until healthy
	$(PY) -m local_stack up

down: $(STAMP) ## stop exactly what `make up` started
	$(PY) -m local_stack down

status: $(STAMP) ## show the local stack's services and ports
	$(PY) -m local_stack status

ui: $(STAMP) ## open the MLflow UI on the local store (starts a UI server if the stack is down)
	$(PY) -m local_stack ui

demo: $(STAMP) ## start the local stack, run batch_prompts/demo/, print the per-model table, stop
	$(PY) -m local_stack.demo

cli: $(STAMP) ## the pipeline CLI: make cli ARGS="estimate batch_prompts/demo/questions.jsonl"
	$(PY) -m pipeline_cli $(ARGS)

benchmark: $(STAMP) ## run the benchmark suite now on the local stack (make up first); ARGS="--every 60" repeats
	$(PY) -m pipeline_cli benchmark $(ARGS)

throughput: $(STAMP) ## pipeline throughput vs the tracking server's ceiling, requests per record, cold start, under Bedrock quotas (about an hour, most of it the 10,000-record batch phase; ARGS="--only quota"; docs/PERFORMANCE.md)
	$(PY) -m throughput.run_all $(ARGS)

# The old name of `throughput`, kept for one release (not in `make help`: "bench" read like `benchmark`).
bench:
	@echo "make bench is deprecated: use make throughput (same run; the alias goes in the next release)" >&2
	@$(MAKE) --no-print-directory throughput  # ARGS passes down with MAKEFLAGS

soak: $(STAMP) ## 1,000 records with faults on: lost/duplicate/failed counts (docs/RELIABILITY.md)
	$(PY) -m throughput.soak --postgres $${PIPELINE_TEST_POSTGRES_URI:-postgresql://postgres@127.0.0.1:5432/postgres}

synth: $(STAMP) ## synthesize every CloudFormation template into cdk.out/ (no AWS account, no Docker)
	CDK_OUTDIR=cdk.out $(PY) app.py

clean: ## remove build output and the local stack's state (.local/)
	rm -rf cdk.out .local build .pytest_cache
