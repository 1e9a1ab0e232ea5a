# The README's commands. Each sets up what it needs: a virtual env with the project and its
# dev extras, and the system packages (redis-server, prometheus, chromium, wrk) when they are
# missing. The browser tests use the system chromium; never `playwright install`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# $(call need,<command>,<debian package>): install the package when the command is missing.
define need
	@command -v $(1) >/dev/null 2>&1 || { \
	  echo "installing $(2) (needed for $(1))"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null; }
endef

.PHONY: demo test lint bench venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(PY) -m examples.quickstart.demo $(ARGS)

test: venv
	$(call need,redis-server,redis-server)
	$(call need,prometheus,prometheus)
	$(call need,chromium,chromium)
	$(PY) -m pytest $(ARGS)

lint: venv
	$(VENV)/bin/ruff check toolkit tests examples
	$(VENV)/bin/ruff format --check toolkit tests examples
	$(VENV)/bin/mypy

bench: venv
	$(call need,redis-server,redis-server)
	$(call need,wrk,wrk)
	$(PY) -m pytest tests/benchmarks --benchmark-only --benchmark-columns=min,median,ops -q
	$(PY) -m tests.benchmarks.propagation
	$(PY) -m tests.benchmarks.pool_latency
	$(PY) -m tests.benchmarks.pool_throughput
	$(PY) -m tests.benchmarks.load $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .benchmarks
