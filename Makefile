# livesale: `make demo` runs the whole system on embedded defaults; `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test serve loadtest bench browser clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,load]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/livesale demo

serve: $(STAMP)
	$(VENV)/bin/livesale serve

browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { echo "installing Debian's chromium for the browser tests"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	    || echo "chromium not installed: browser tests will be skipped"; }

test: $(STAMP) browser
	$(PY) -m pytest $(PYTEST_ARGS)

loadtest: $(STAMP)
	$(PY) -m loadtest.run_locust --users $${USERS:-200} --seconds $${SECONDS_:-30}

bench: $(STAMP)
	$(PY) -m loadtest.bench

clean:
	rm -rf $(VENV) .livesale test-output *.egg-info
