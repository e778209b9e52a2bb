# Every target sets itself up: the virtual environments are created on first use.
PYTHON ?= python3
VENV := .venv
SAM_VENV := .tools-sam
STAMP := $(VENV)/.installed
SAM_STAMP := $(SAM_VENV)/.installed
CHECK_VENV := .tools-check
CHECK_STAMP := $(CHECK_VENV)/.installed
export LAMBDA_IMAGE ?= dicom-lambda-python3.11:local
export MOTO_IMAGE ?= dicom-moto-server:local
export SAM_CLI := $(abspath $(SAM_VENV)/bin/sam)
export SAM_CLI_TELEMETRY := 0

RUN_ARGS ?=
PYTEST_ARGS ?=

.PHONY: run test lint typecheck unit e2e sam-validate template-check deploy-viewer lambda-image sam-build sam-test sam-local-up sam-local-sample sam-local-down venv clean

venv: $(STAMP)

# setuptools says "Editable installation." (an information, not a problem) on every editable
# install; the filter keeps the first run's console to what matters.
$(STAMP): pyproject.toml constraints.txt
	@echo "Setting up $(VENV) (first run, or pyproject.toml changed): the gateway, the Lambda code, moto,"
	@echo "  Powertools, pydicom codecs and the test tools, from PyPI: about 2 minutes ..."
	@start=$$(date +%s); \
	$(PYTHON) -m venv $(VENV) && \
	$(VENV)/bin/pip install -q --disable-pip-version-check --upgrade pip && \
	PYTHONWARNINGS="ignore:Editable installation" \
	    $(VENV)/bin/pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev]" && \
	echo "$(VENV) ready in $$(( $$(date +%s) - start )) s"
	@touch $@

# SAM CLI pins its own boto3/botocore: it lives in its own environment.
$(SAM_STAMP):
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install -q --upgrade pip
	$(SAM_VENV)/bin/pip install -q aws-sam-cli==1.170.0
	touch $@

# checkov pins its own boto3 and friends: a third environment, so neither side conflicts.
$(CHECK_STAMP):
	$(PYTHON) -m venv $(CHECK_VENV)
	$(CHECK_VENV)/bin/pip install -q --upgrade pip
	$(CHECK_VENV)/bin/pip install -q checkov==3.3.30
	touch $@

## run: the whole system on this machine (moto server, ingest, API on :3000, gateway on :11112); its data stays in .local-run between runs (RUN_ARGS=--fresh starts empty)
run: $(STAMP)
	$(VENV)/bin/local-cloud run $(RUN_ARGS)

## test: lint, types, template checks, then every test tier (tests/sam needs a running Docker engine)
test: lint typecheck template-check
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

sam-validate: $(SAM_STAMP)
	$(SAM_CLI) validate --lint --region us-east-1

## template-check: sam validate --lint, cfn-lint and checkov on template.yaml (no failed checks allowed); checkov and sam validate also with the optional viewer on (checkov skips resources whose condition is false)
template-check: sam-validate $(CHECK_STAMP)
	$(SAM_VENV)/bin/cfn-lint template.yaml
	$(CHECK_VENV)/bin/checkov --file template.yaml --framework cloudformation --skip-download --quiet --compact
	mkdir -p .aws-sam
	$(PYTHON) tools/template_variant.py DeployViewer=true > .aws-sam/template-viewer.yaml
	$(SAM_CLI) validate --lint --region us-east-1 --template-file .aws-sam/template-viewer.yaml
	$(CHECK_VENV)/bin/checkov --file .aws-sam/template-viewer.yaml --framework cloudformation --skip-download --quiet --compact

## deploy-viewer: upload the pinned OHIF viewer to the stack's viewer bucket with its generated app-config.js (DeployViewer=true; STACK=<stack name>, default from samconfig.toml; VIEWER_ARGS=... more options)
STACK ?= dicom-index-dev
VIEWER_ARGS ?=
deploy-viewer: $(STAMP)
	$(VENV)/bin/python -m local_cloud.viewer_deploy --stack-name $(STACK) $(VIEWER_ARGS)

## lambda-image: the local Lambda base image and moto server image for `sam local` (idempotent, cached)
lambda-image: $(STAMP)
	PIP="$(abspath $(VENV))/bin/python -m pip" bash tools/lambda-image/build.sh

## sam-build: `sam build` with the venv's Python 3.11 and pip (no container)
sam-build: $(STAMP) $(SAM_STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" $(SAM_CLI) build

## sam-local-up / sam-local-sample / sam-local-down: moto container + resources for `sam local` by hand
sam-local-up: lambda-image
	$(VENV)/bin/python tools/lambda-image/sam_local.py up

sam-local-sample: $(STAMP)
	$(VENV)/bin/python tools/lambda-image/sam_local.py sample

sam-local-down:
	$(VENV)/bin/python tools/lambda-image/sam_local.py down

## sam-test: only the SAM tier (sam build, sam local invoke, sam local start-api in Docker)
sam-test: $(STAMP) $(SAM_STAMP)
	$(VENV)/bin/pytest tests/sam $(PYTEST_ARGS)

unit: $(STAMP)
	$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

e2e: $(STAMP)
	$(VENV)/bin/pytest tests/e2e $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(SAM_VENV) $(CHECK_VENV) .local-run test-output .aws-sam .mypy_cache .ruff_cache .pytest_cache
