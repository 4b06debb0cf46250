# Two entry points for a newcomer: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint venv clean

$(BIN)/drbridge: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

venv: $(BIN)/drbridge

demo: venv
	$(BIN)/drbridge demo

test: venv
	$(BIN)/ruff check ven policies bridge tests examples
	$(BIN)/pytest

lint: venv
	$(BIN)/ruff check ven policies bridge tests examples

clean:
	rm -rf $(VENV) var build *.egg-info
