# prequal: `make run` runs the whole system, `make test` the whole suite. `make help` lists all.
SHELL := /bin/bash
.DEFAULT_GOAL := help
# Poetry on the PATH, else the one infra/install-poetry.sh puts in a virtualenv of its own.
POETRY ?= $(or $(shell command -v poetry 2>/dev/null),$(CURDIR)/.infra/poetry/bin/poetry)
RUN := $(POETRY) run
PY_PACKAGES := runtime schema outbox messaging ops command_api query_api credit_worker decision_worker bench

# Settings in .env reach infra/local.sh too, not only the Python processes.
-include .env
export

.PHONY: audit chart shellcheck lint-openapi test-faults test-cluster bench bench-smoke profile bench-ab bench-cluster bench-relay drop-slot docs schemas help install infra-up infra-down infra-status migrate run run-local test check lint format typecheck imports clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

install: ## Install the Python environment (Poetry) and the git pre-commit hook
	@test -x "$(POETRY)" || infra/install-poetry.sh >/dev/null
	$(POETRY) config virtualenvs.in-project true
	$(POETRY) install --no-interaction
	@if [ -d .git ]; then $(RUN) pre-commit install >/dev/null; fi

.venv/.installed: pyproject.toml poetry.lock
	@$(MAKE) --no-print-directory install
	@touch $@

infra-up: ## Start local PostgreSQL and Kafka (reuses running ones)
	infra/local.sh up

infra-down: ## Stop the local servers (Kafka Connect too, if it runs)
	infra/local.sh down

infra-status: ## Show whether the local servers run
	infra/local.sh status

migrate: .venv/.installed ## Apply the database migrations
	$(RUN) prequal-migrate upgrade head

run: .venv/.installed infra-up migrate ## Run the whole system in the foreground (Ctrl-C stops it)
	$(RUN) prequal-ops topics create
	@if [ "$${PREQUAL_RELAY:-polling}" = debezium ]; then infra/local.sh up connect; fi
	$(RUN) infra/run.sh

run-local: run ## Same as run (the original design's name)

test: .venv/.installed ## Run the whole suite against real PostgreSQL and Kafka, coverage >= 90%
	$(RUN) pytest -m "not network_fault and not kafka_cluster" --cov --cov-report=term-missing --cov-fail-under=90

# Without coverage tracing: the drills measure latency under load, and tracing every
# process would measure the tracer (docs/operations.md, "Network faults").
test-faults: .venv/.installed ## The network-fault drills (Toxiproxy) against the six processes under load
	infra/install-toxiproxy.sh
	$(RUN) pytest -m network_fault -p no:cacheprovider

# Without coverage tracing, for the same reason; the cluster runs in .infra/cluster on
# free ports, beside any other servers (docs/operations.md, "Three brokers").
test-cluster: .venv/.installed ## Broker-loss drills on a three-broker KRaft cluster under load
	$(RUN) pytest -m kafka_cluster -p no:cacheprovider

check: lint typecheck imports shellcheck lint-openapi ## Lint, format check, mypy strict, import contracts, shellcheck, OpenAPI linters

lint: .venv/.installed ## Ruff and Black --check
	$(RUN) ruff check .
	$(RUN) black --check .

typecheck: .venv/.installed ## mypy --strict
	$(RUN) mypy $(PY_PACKAGES) tests

imports: .venv/.installed ## Import-linter contracts (services -> outbox -> schema -> runtime)
	$(RUN) lint-imports

lint-openapi: .venv/.installed ## Redocly and Spectral on both OpenAPI documents (errors fail)
	infra/lint-openapi.sh

shellcheck: ## shellcheck on every shell script of the repository
	@command -v shellcheck >/dev/null || { echo "missing: shellcheck; run: apt-get install -y shellcheck" >&2; exit 1; }
	shellcheck .ci/run infra/*.sh infra/debezium/*.sh

chart: ## Lint, render and validate the Helm chart (installs helm, kubeconform, schemas into .infra)
	infra/validate-chart.sh

# --strict: a package the vulnerability service cannot look up fails the audit instead of
# being skipped in silence. PIP_AUDIT_VULNERABILITY_SERVICE=osv (and PIP_AUDIT_OSV_URL)
# pick another service; the default is PyPI's per-version JSON API.
audit: .venv/.installed ## Known vulnerabilities in the installed packages (pip-audit; fails if any cannot be checked)
	$(RUN) pip-audit --strict --skip-editable --progress-spinner off

format: .venv/.installed ## Fix lint and formatting
	$(RUN) ruff check --fix .
	$(RUN) black .

schemas: .venv/.installed ## Regenerate the checked-in event JSON Schemas (schema/json)
	$(RUN) python -m schema.jsonschema

docs: .venv/.installed ## Regenerate the README's configuration table from Settings
	$(RUN) python -c 'from runtime.settings import write_settings_table; write_settings_table("README.md")'

drop-slot: ## Drop the Debezium replication slot and publication (Kafka Connect must be stopped)
	infra/local.sh drop-slot

bench: .venv/.installed infra-up ## Every benchmark side by side; writes bench/results, the plot and docs/benchmarks.md
	$(RUN) python -m bench.run --plot docs/bench-latency.png --write-docs

bench-smoke: .venv/.installed infra-up ## Every benchmark section, briefly (CI: keeps the harness working)
	$(RUN) python -m bench.run --smoke --out bench/results/bench-smoke.json --plot bench/results/bench-smoke.png

profile: .venv/.installed infra-up ## py-spy profiles of every process at 300 applications/s (folded stacks + summary)
	$(RUN) python -m bench.profile --rate 300 --seconds 15 --out bench/results/profile

bench-ab: .venv/.installed infra-up ## The command API two ways, interleaved rounds: BEFORE=<another checkout>, or SERVERS=uvicorn,granian
	@if [ -n "$(SERVERS)" ]; then $(RUN) python -m bench.ab --servers "$(SERVERS)"; \
	elif [ -n "$(BEFORE)" ]; then $(RUN) python -m bench.ab --before "$(BEFORE)"; \
	else echo "usage: make bench-ab BEFORE=<checkout, e.g. git worktree add /tmp/before <commit>> | SERVERS=uvicorn,granian" >&2; exit 2; fi

# On servers of its own (.infra/bench-cluster, free ports), started and stopped by the module.
bench-cluster: .venv/.installed ## The pipeline benchmark on a three-broker KRaft cluster (3 replicas, min ISR 2)
	$(RUN) python -m bench.cluster_pipeline --out bench/results/pipeline_cluster.json

bench-relay: .venv/.installed infra-up migrate ## Commit-to-Kafka latency of both relays at one rate
	$(RUN) python -m bench.relay_latency --rate 200 --seconds 15 --out bench/results/relay_latency.json

clean: ## Remove caches and coverage data (not the servers' data)
	rm -rf .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.* htmlcov
