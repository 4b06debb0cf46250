# Two entry points for a newcomer: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test bench lint venv clean chromium

$(BIN)/drbridge: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

venv: $(BIN)/drbridge

demo: venv
	$(BIN)/drbridge demo

# Tests run in TEST_WORKERS processes (pytest-xdist): they mostly wait on protocols, so two
# share two cores well. The heaviest tests (their own processes, large fleets, a browser)
# carry the xdist group "heavy" and run one after another on one worker, beside the rest.
TEST_WORKERS ?= 2
test: venv chromium
	$(BIN)/ruff check ven policies bridge tests examples bench
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup

# The dashboard's browser test drives Debian's Chromium (never a downloaded browser build);
# installed here when this is a Debian machine and we may, else that one test is skipped.
chromium:
	@test -x /usr/bin/chromium || { test "$$(id -u)" = 0 && command -v apt-get >/dev/null \
	    && apt-get update -qq && apt-get install -y -qq chromium; } \
	    || echo "note: no /usr/bin/chromium: the dashboard's browser test will be skipped"

# Benchmarks (loopback only, about twenty minutes: the fleet runs and throughput rounds,
# then the local-controller scenario): the run's figures in docs/benchmarks.json,
# docs/benchmarks.md and the README's results paragraph generated from them.
# WORKERS: the bridge's OCPP edge worker processes (ocpp.workers); 0, the default, keeps the
# edge in the bridge's own process.
WORKERS ?= 0
bench: venv
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m bench.run --workers $(WORKERS)

lint: venv
	$(BIN)/ruff check ven policies bridge tests examples

clean:
	rm -rf $(VENV) var build *.egg-info
