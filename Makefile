# The README's commands. Each sets up what it needs: a virtual env with the project and its
# dev extras, and the system packages (redis-server, prometheus, chromium, wrk) when they are
# missing. The browser tests use the system chromium; never `playwright install`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The same project at the lowest versions pyproject.toml declares for its direct dependencies.
LOWEST := .venv-lowest
LOW_STAMP := $(LOWEST)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# The framework plugins (plugins/*, one distribution each), installed editable with their
# framework so the tests see their entry points; a new plugin adds its line.
PLUGINS := -e 'plugins/toolkit-pydantic-ai[pydantic-ai]'
PLUGINS += -e 'plugins/toolkit-openai[openai]'
# The plugins' tests at the lowest framework versions their pyproject.toml files declare.
PLUGINS_LOWEST := .venv-plugins-lowest
PLUGINS_LOW_STAMP := $(PLUGINS_LOWEST)/.installed
# The suite runs on two pytest-xdist workers: the tests that start fleets of server processes,
# a browser or a demo take turns on one of them, every other module goes to either
# (tests/conftest.py, pytest_xdist_make_scheduler). ARGS="-n 0" runs it in one process.
XDIST := -n 2 --dist loadgroup
# Every process a test starts (uvicorn workers, the CLI, the demos) imports the toolkit and the
# test apps: compiled once here, since PYTHONDONTWRITEBYTECODE (set on CI's machines) keeps
# Python from caching them itself. uv installs with --compile-bytecode for the same reason
# (pip compiles what it installs by default).
SOURCES := toolkit tests examples plugins

# $(call need,<command>,<debian package>): install the package when the command is missing.
define need
	@command -v $(1) >/dev/null 2>&1 || { \
	  echo "installing $(2) (needed for $(1))"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null; }
endef

.PHONY: demo test test-lowest test-plugins-lowest test-openai-lowest lint bench venv clean

$(STAMP): pyproject.toml $(wildcard plugins/*/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]' $(PLUGINS)
	touch $(STAMP)

venv: $(STAMP)

$(LOW_STAMP): pyproject.toml $(STAMP)
	$(VENV)/bin/uv venv -q --allow-existing --python $(PY) $(LOWEST)
	$(VENV)/bin/uv pip install -q --compile-bytecode --python $(LOWEST)/bin/python --resolution lowest-direct -e '.[dev]'
	touch $(LOW_STAMP)

# `make demo` runs the quickstart; `make demo NAME=memory-search` (or `make demo memory-search`)
# another example: any folder of examples/ with a demo.py, its name with dashes.
DEMO_NAMES := $(subst _,-,$(patsubst examples/%/demo.py,%,$(wildcard examples/*/demo.py)))
ifeq (demo,$(firstword $(MAKECMDGOALS)))
  DEMO_GOAL_NAMES := $(filter $(DEMO_NAMES),$(wordlist 2,$(words $(MAKECMDGOALS)),$(MAKECMDGOALS)))
  ifneq ($(DEMO_GOAL_NAMES),)
    NAME ?= $(firstword $(DEMO_GOAL_NAMES))
    # The name is the demo's argument, not a target of its own.
    $(eval $(DEMO_GOAL_NAMES):;@:)
  endif
endif
NAME ?= quickstart

demo: venv
	$(PY) -m examples $(NAME) $(ARGS)

test: venv
	$(call need,redis-server,redis-server)
	$(call need,prometheus,prometheus)
	$(call need,chromium,chromium)
	$(PY) -m compileall -q -j 0 $(SOURCES)
	$(PY) -m pytest $(XDIST) $(ARGS)
	$(MAKE) --no-print-directory test-lowest
	$(MAKE) --no-print-directory test-plugins-lowest
	$(MAKE) --no-print-directory test-openai-lowest

# The suite's core (tests/unit) at the lowest declared versions; the typing test is left to the
# main run, since it checks mypy's reading of the code rather than the code at run time, and so
# are the examples' demos (tests/examples), which drive whole servers through the same core.
test-lowest: $(LOW_STAMP)
	$(LOWEST)/bin/python -m compileall -q -j 0 $(SOURCES)
	$(LOWEST)/bin/python -m pytest tests/unit --deselect tests/unit/test_typing.py -q $(XDIST)

# The plugins stay out of the lowest environment above: their frameworks need newer versions
# of the toolkit's own dependencies (pydantic, openai) than its floors. Here the project and
# its dev tools are the newest, and each plugin's direct dependencies (its framework) the
# lowest it declares.
$(PLUGINS_LOW_STAMP): pyproject.toml $(wildcard plugins/*/pyproject.toml) $(STAMP)
	$(VENV)/bin/uv venv -q --allow-existing --python $(PY) $(PLUGINS_LOWEST)
	$(VENV)/bin/uv pip install -q --compile-bytecode --python $(PLUGINS_LOWEST)/bin/python -e '.[dev]'
	$(VENV)/bin/uv pip install -q --compile-bytecode --python $(PLUGINS_LOWEST)/bin/python --resolution lowest-direct $(PLUGINS)
	touch $(PLUGINS_LOW_STAMP)

test-plugins-lowest: $(PLUGINS_LOW_STAMP)
	$(PLUGINS_LOWEST)/bin/python -m pytest tests/plugins -q

# toolkit-openai's lowest SDK (openai 1.66) is older than pydantic-ai's floor (openai 3.31), so
# the environment above cannot hold it: this one has the project newest and that plugin's
# direct dependency, the SDK, at the lowest it declares.
OPENAI_LOWEST := .venv-openai-lowest
OPENAI_LOW_STAMP := $(OPENAI_LOWEST)/.installed

$(OPENAI_LOW_STAMP): pyproject.toml plugins/toolkit-openai/pyproject.toml $(STAMP)
	$(VENV)/bin/uv venv -q --allow-existing --python $(PY) $(OPENAI_LOWEST)
	$(VENV)/bin/uv pip install -q --compile-bytecode --python $(OPENAI_LOWEST)/bin/python -e '.[dev]'
	$(VENV)/bin/uv pip install -q --compile-bytecode --python $(OPENAI_LOWEST)/bin/python --resolution lowest-direct -e 'plugins/toolkit-openai[openai]'
	touch $(OPENAI_LOW_STAMP)

test-openai-lowest: $(OPENAI_LOW_STAMP)
	$(OPENAI_LOWEST)/bin/python -m pytest tests/plugins/test_openai.py -q

lint: venv
	$(VENV)/bin/ruff check toolkit tests examples plugins
	$(VENV)/bin/ruff format --check toolkit tests examples plugins
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy plugins/*/toolkit_*

bench: venv
	$(call need,redis-server,redis-server)
	$(call need,wrk,wrk)
# A Redis connection one of the benchmarks' fixtures leaves to the garbage collector is
# reported where the collection happens to run (not reproduced alone): not a failed benchmark.
	$(PY) -m pytest tests/benchmarks --benchmark-only --benchmark-columns=min,median,ops -q \
		-W "ignore::pytest.PytestUnraisableExceptionWarning" \
		--ignore=tests/benchmarks/test_bench_agents.py --ignore=tests/benchmarks/test_status.py
	$(PY) -m tests.benchmarks.propagation
	$(PY) -m tests.benchmarks.pool_latency
	$(PY) -m tests.benchmarks.pool_throughput
# The agent layer and the status board in CPU time (spans' export thread included):
# microseconds a call, which waiting for a shared CPU would otherwise swamp.
	$(PY) -m pytest tests/benchmarks/test_bench_agents.py tests/benchmarks/test_status.py \
		--benchmark-only --benchmark-timer=time.process_time --benchmark-columns=min,median,ops -q
	$(PY) -m tests.benchmarks.llm_overhead
	$(PY) -m tests.benchmarks.loop_monitor
	$(PY) -m tests.benchmarks.load $(ARGS)

clean:
	rm -rf $(VENV) $(LOWEST) $(PLUGINS_LOWEST) $(OPENAI_LOWEST) .pytest_cache .mypy_cache .ruff_cache .benchmarks
