# streamscore: two set-up commands. `make run` runs the main job on the embedded
# defaults (Apache Kafka + SQLite); `make test` passes the tests on a fresh machine.
SHELL := /bin/bash
VENV  := .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements.lock | sha256sum | cut -c1-12)

.PHONY: install run down test unit lint clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements.lock -e ".[test]"
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

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

unit: install
	$(BIN)/python -m pytest tests/unit -q

lint: install
	$(BIN)/ruff check streams features models feature_repo tests
	$(BIN)/ruff format --check streams features models feature_repo tests

clean:
	rm -rf $(VENV) .streamscore
