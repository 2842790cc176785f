# livesale: `make demo` runs the whole system on embedded defaults; `make test` runs the suite
# (tests/unit, then tests/integration, then tests/e2e); `make unit` the unit layer alone; `make lint` ruff + mypy.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test unit lint serve loadtest bench browser clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
	  echo "could not create $(VENV): on Debian/Ubuntu install python3-venv (apt-get install python3-venv)"; exit 1; }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,load]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/livesale demo

serve: $(STAMP)
	$(VENV)/bin/livesale serve

# Same lookup as tests/browser_helpers.py: chromium or chromium-browser on PATH, else /usr/bin/chromium
# (with Debian's colour emoji font: fan teams' badges are emoji).
# Not root: try passwordless sudo (sudo -n never prompts) before giving up.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  test -x /usr/bin/chromium || \
	  { echo "installing Debian's chromium for the browser tests"; \
	    if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
	    ($$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-color-emoji >/dev/null) \
	    || echo "chromium not installed (needs root or passwordless sudo): browser tests will be skipped" \
	            "(a failure under LIVESALE_REQUIRE_BROWSER=1)"; }

# The money-path and room tests that run a second time on a 3-master + 3-replica embedded Valkey Cluster
# (tests/cluster_helpers.py): the stock scripts, settlement, payments, the gateway's rooms and buys, stock
# pools and the multi-process bursts. Not the whole suite again: it would double CI's time for tests that
# touch Redis only through the same client calls (docs/SCALING.md says which paths differ on a cluster).
CLUSTER_TESTS := tests/integration/test_inventory.py tests/integration/test_settlement.py \
  tests/integration/test_payments.py tests/integration/test_gateway.py tests/integration/test_gateway_more.py \
  tests/integration/test_ws_defects.py tests/integration/test_pools.py tests/integration/test_buckets.py \
  tests/e2e/test_multiprocess.py tests/e2e/test_inventory_burst.py tests/e2e/test_bucket_burst.py

# All three layers, in pyproject's testpaths order: tests/unit, tests/integration, tests/e2e; then the
# cluster subset above on an embedded cluster (LIVESALE_TEST_REDIS=cluster).
test: $(STAMP) browser
	$(PY) -m pytest $(PYTEST_ARGS)
	LIVESALE_TEST_REDIS=cluster $(PY) -m pytest $(PYTEST_ARGS) $(CLUSTER_TESTS)

# Pure code only (no Redis, SQL, sockets or processes): seconds, not minutes.
unit: $(STAMP)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# Config in pyproject.toml ([tool.ruff], [tool.mypy]); .ci/run runs this before the suite.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

loadtest: $(STAMP)
	$(PY) -m loadtest.run_locust --users $${USERS:-200} --seconds $${SECONDS_:-30}

# ARGS passes options through, e.g. make bench ARGS="--baseline da14cd6 --only checkout,fanout" (see loadtest/bench.py)
bench: $(STAMP)
	$(PY) -m loadtest.bench $(ARGS)

clean:
	rm -rf $(VENV) .livesale test-output *.egg-info .mypy_cache .ruff_cache
