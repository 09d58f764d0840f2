# edgeloom developer entry points. `make run` and `make test` set everything up first.
VENV ?= .venv
BIN := $(VENV)/bin
EXAMPLE ?= examples/splittraining-mnist1d.yaml

.PHONY: setup run test test-fast lint typecheck crds bench clean controlplane test-tools

setup:
	@./scripts/setup-venv.sh

run: setup
	$(BIN)/edgeloom run $(EXAMPLE)

lint: setup typecheck
	$(BIN)/ruff check services operators tests
	$(BIN)/lint-imports
	$(BIN)/edgeloom crds --check
	$(BIN)/edgeloom dashboards --check

# mypy --strict over the packages listed in pyproject.toml's [tool.mypy] (api, algos, models,
# data, runtime, operators, and apps.hat).
typecheck: setup
	$(BIN)/mypy

# The e2e tier's kube-apiserver, etcd, controller-manager, scheduler and helm, built from Go
# modules into ~/.cache/edgeloom/controlplane the first time (tens of minutes), then reused.
controlplane:
	@./controlplane/build.sh >/dev/null

# Prometheus, promtool and shellcheck from Debian's packages, installed when missing.
test-tools:
	@./scripts/install-test-tools.sh

test: lint controlplane test-tools
	$(BIN)/python -m pytest -q --durations=30

test-fast: setup
	$(BIN)/python -m pytest -q -m "not e2e and not integration"

crds: setup
	$(BIN)/edgeloom crds

bench: setup
	$(BIN)/edgeloom bench transport

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .mypy_cache .hypothesis
