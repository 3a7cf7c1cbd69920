# MailBridge: `make run` serves on the embedded default, `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TEST_PG_URL ?= postgresql://postgres@127.0.0.1:5432/test
PYTEST_ARGS ?=

.PHONY: run test lint typecheck test-sqlite test-postgres bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/mailbridge db upgrade
	$(BIN)/mailbridge serve

test: lint typecheck test-sqlite test-postgres

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

test-sqlite: $(VENV)/.installed-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The same suite on PostgreSQL. CI must run it; elsewhere it is skipped, with
# the reason, when no server answers at TEST_PG_URL.
test-postgres: $(VENV)/.installed-test
	@if $(BIN)/python -c "import psycopg,sys; psycopg.connect('$(TEST_PG_URL)', connect_timeout=3).close()" 2>/dev/null; then \
		MAILBRIDGE_TEST_DATABASE_URL='$(TEST_PG_URL)' $(BIN)/python -m pytest $(PYTEST_ARGS); \
	elif [ -n "$$CI" ]; then \
		echo "PostgreSQL is not reachable at $(TEST_PG_URL) (package postgresql): CI must run the suite on it" >&2; exit 1; \
	else \
		echo "SKIPPED the PostgreSQL run: no server at $(TEST_PG_URL) (install package postgresql or set TEST_PG_URL)"; \
	fi

bench: $(VENV)/.installed-test
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
