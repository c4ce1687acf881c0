# Tandem: `make demo` and `make test` work on a fresh machine; everything else is a step of theirs.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
RUN := $(UV) run --frozen

.PHONY: help setup up down status demo demo-loop chaos test lint unit schemas secrets clean

help:
	@echo "make demo    set up, start the stack, run a realistic workload, print the summary"
	@echo "make demo-loop    one turn of the improvement loop: corrections, retraining, promotion"
	@echo "make chaos    prove one decision per task under kills and outages (about 10 min)"
	@echo "make test    set up and run lint, unit, integration and end-to-end tests"
	@echo "make up | down | status    the local stack (Kafka and the four services)"
	@echo "make secrets    the Compose stack's secrets, made once into .env"

setup:
	@bash deploy/local/install-system-deps.sh
	@$(UV) sync --frozen --all-groups --quiet
	@$(RUN) python -c "from tandem_cli.stack.kafka import kafka_libs; kafka_libs()"
	@bash tests/deploy/install-tools.sh

up: setup
	@$(RUN) tandem stack up

down:
	@$(RUN) tandem stack down

status:
	@$(RUN) tandem stack status

demo: up
	@$(RUN) tandem demo
	@echo "The stack is still running: make status to see it, make down to stop it."

demo-loop: up
	@$(RUN) tandem demo-loop
	@echo "The stack is still running: make status to see it, make down to stop it."

# On a stack of its own (free ports, a temporary folder): 20,000 tasks while services and the
# broker are killed, then a broker outage and a PostgreSQL restart; a report each, exit 1 on a
# failed check. Leaves the stack of `make up` alone.
chaos: setup
	@$(RUN) tandem chaos --scenario all --tasks 20000 --rate 50 --kills 20 --broker-restarts 3 \
		--outage-seconds 30 --outage-tasks 200

lint:
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy
	$(RUN) mypy bench

# Two workers, each with a broker and a PostgreSQL server of its own; a module's tests stay on
# one worker, so a module's fixtures (the chaos run's stack) start once. Then, by themselves,
# the tests marked `alone` (the contract runs: how far they reach depends on timing).
test: setup lint
	$(RUN) pytest -n 2 --dist loadscope -m "not alone"
	$(RUN) pytest -m alone

# docker compose up refuses to start without them; kept in .env (ignored by git), never replaced.
secrets:
	@$(UV) sync --frozen --quiet
	@$(RUN) tandem secrets .env

schemas:
	$(RUN) python -m tandem_shared.schemas docs/schemas
	$(RUN) tandem model schema
	$(RUN) tandem policy schema
	$(RUN) tandem metrics docs/metrics.md

clean: down
	rm -rf .tandem
