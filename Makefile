# Two commands for a newcomer: `make demo` (the whole flow, no cloud account) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test docs bench clean

$(BIN)/filesync: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	@touch $@

demo: $(BIN)/filesync
	$(BIN)/filesync demo

test: $(BIN)/filesync
	$(BIN)/ruff check filesync tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/pytest $(PYTEST_ARGS)

docs: $(BIN)/filesync
	$(BIN)/python tools/sync_docs.py

bench: $(BIN)/filesync
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
