# Every target sets itself up: the virtual environments are created on first use.
PYTHON ?= python3
VENV := .venv
SAM_VENV := .tools-sam
STAMP := $(VENV)/.installed
SAM_STAMP := $(SAM_VENV)/.installed
export SAM_CLI := $(abspath $(SAM_VENV)/bin/sam)
export SAM_CLI_TELEMETRY := 0

RUN_ARGS ?=
PYTEST_ARGS ?=

.PHONY: run test lint typecheck unit e2e sam-validate venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c constraints.txt -e ".[dev]"
	touch $@

# SAM CLI pins its own boto3/botocore: it lives in its own environment.
$(SAM_STAMP):
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install -q --upgrade pip
	$(SAM_VENV)/bin/pip install -q aws-sam-cli==1.170.0
	touch $@

## run: the whole system on this machine (moto server, ingest, API on :3000, gateway on :11112)
run: $(STAMP)
	$(VENV)/bin/local-cloud run $(RUN_ARGS)

## test: lint, types, then every test tier
test: lint typecheck sam-validate
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

sam-validate: $(SAM_STAMP)
	$(SAM_CLI) validate --lint --region us-east-1

unit: $(STAMP)
	$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

e2e: $(STAMP)
	$(VENV)/bin/pytest tests/e2e $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(SAM_VENV) .local-run test-output .aws-sam .mypy_cache .ruff_cache .pytest_cache
