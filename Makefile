# streamscore: two set-up commands. `make run` runs the main job on the embedded
# defaults (Apache Kafka + SQLite); `make test` passes the tests on a fresh machine.
SHELL := /bin/bash
VENV  := .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements.lock | sha256sum | cut -c1-12)

.PHONY: install run down test unit lint clean bench bench-env chaos

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements.lock -e ".[test]"
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

# The Quix Streams bench subject's own environment (its pydantic cap conflicts with ours).
QUIX       := $(VENV)/quix
QUIX_STAMP := $(QUIX)/.installed-$(shell cat requirements-bench.lock | sha256sum | cut -c1-12)

$(QUIX_STAMP): requirements-bench.lock
	test -x $(QUIX)/bin/python || python3 -m venv $(QUIX)
	$(QUIX)/bin/python -m pip install -q --upgrade pip
	$(QUIX)/bin/python -m pip install -q -r requirements-bench.lock
	rm -f $(QUIX)/.installed-* && touch $(QUIX_STAMP)

bench-env: install $(QUIX_STAMP)

run: install
	$(BIN)/streamscore up
	$(BIN)/streamscore produce --n 2000 --rate 400
	$(BIN)/streamscore produce --file deploy/demo/bad-events.jsonl
	@echo "--- first predictions ---"
	$(BIN)/streamscore tail predictions --n 5 --idle 20
	@echo "--- dead letters (bad input, with the reason in the headers) ---"
	$(BIN)/streamscore tail deadletter --n 3 --idle 20
	$(BIN)/streamscore audit --idle 5
	@echo "the stack keeps running: 'streamscore status', 'streamscore tail predictions', 'make down' to stop"

down: install
	$(BIN)/streamscore down

test: install
	bash deploy/test.sh

# The whole fault matrix (tests/integration/test_faults_*.py, the slow `chaos` rows too)
# on its own broker and Redis; prints the table of figures; deploy/test.sh stops what it
# started, and the last line fails if a worker of this tree is still running.
CHAOS_ROWS := .streamscore/chaos-rows.jsonl
chaos: install
	mkdir -p .streamscore && rm -f $(CHAOS_ROWS)
	FAULT_REPORT=$(abspath $(CHAOS_ROWS)) bash deploy/test.sh $(sort $(wildcard tests/integration/test_faults_*.py)); \
	status=$$?; $(BIN)/python -m tests.integration.faults $(CHAOS_ROWS); \
	if pgrep -f "$(abspath $(VENV))/bin/[p]ython -m streams.cli worker" >/dev/null; then \
	  echo "chaos: a worker is still running" >&2; status=1; fi; exit $$status

# Every subject, one run, on the default stack (BENCHMARKS.md shows one such run).
bench: bench-env
	$(BIN)/streamscore up
	$(BIN)/streamscore bench --workers 2 --json .streamscore/bench.json

unit: install
	$(BIN)/python -m pytest tests/unit -q

lint: install
	$(BIN)/ruff check streams features models feature_repo tests
	$(BIN)/ruff format --check streams features models feature_repo tests

clean:
	rm -rf $(VENV) .streamscore
