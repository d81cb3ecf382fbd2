# The two commands the README opens with: `make demo` and `make test`.
# Each installs what it needs: Debian packages once, then a virtual environment.

VENV ?= .venv
PY := $(VENV)/bin/python
DEBS := etcd-server haproxy chromium chromium-driver
STAMP := $(VENV)/.installed

.PHONY: gateway-demo demo test lint typecheck unit integration e2e bench deps clean

deps: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

demo: deps
	$(VENV)/bin/marina demo

gateway-demo: deps
	$(PY) -m gateway.demo

lint: deps
	$(VENV)/bin/ruff check catalog gateway tests bench
	$(VENV)/bin/ruff format --check catalog gateway tests bench
	$(VENV)/bin/lint-imports

typecheck: deps
	$(VENV)/bin/mypy

test: lint typecheck
	$(PY) tests/run.py

bench: deps
	@command -v wrk >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -qq wrk; }
	$(PY) bench/gateway.py
	$(PY) bench/reload_modes.py
	$(PY) bench/actions.py

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache artifacts
