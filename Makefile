# Two entry points for a newcomer: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test bench lint venv clean

$(BIN)/drbridge: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

venv: $(BIN)/drbridge

demo: venv
	$(BIN)/drbridge demo

test: venv
	$(BIN)/ruff check ven policies bridge tests examples bench
	$(BIN)/pytest

# Benchmarks (loopback only, about ten minutes); results in docs/benchmarks.md.
bench: venv
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m bench.run

lint: venv
	$(BIN)/ruff check ven policies bridge tests examples

clean:
	rm -rf $(VENV) var build *.egg-info
