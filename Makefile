# The two commands the README opens with: `make demo` and `make test`.
# Each installs what it needs: Debian packages once, then a virtual environment.

VENV ?= .venv
PY := $(VENV)/bin/python
DEBS := etcd-server haproxy bubblewrap
TEST_DEBS := chromium chromium-driver
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo gateway-demo test lint typecheck bench deps test-deps clean screenshots

# Installs the Debian packages named in $(1) that are missing.
define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
endef

define apt_install_inline
SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(1)
endef

deps: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(call apt_install,$(DEBS))
	@python3 -c "import ensurepip" 2>/dev/null || { $(call apt_install_inline,python3-venv); }
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	@touch $(STAMP)

test-deps: $(TEST_STAMP)

$(TEST_STAMP): $(STAMP)
	$(call apt_install,$(TEST_DEBS))
	$(PY) -m pip install -q -e '.[test]'
	@touch $(TEST_STAMP)

demo: deps
	$(VENV)/bin/marina demo

gateway-demo: deps
	$(PY) -m gateway.demo

lint: test-deps
	$(VENV)/bin/ruff check catalog gateway tests bench
	$(VENV)/bin/ruff format --check catalog gateway tests bench
	$(VENV)/bin/lint-imports

typecheck: test-deps
	$(VENV)/bin/mypy

test: lint typecheck
	$(PY) tests/run.py

# The README's dashboard screenshots (docs/*.png), from a clean demo in headless Chromium.
screenshots: test-deps
	$(PY) -m tests.e2e.screenshots

bench: test-deps
	@command -v wrk >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -qq wrk; }
	@command -v go >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -qq golang-go; }
	$(PY) bench/gateway.py
	$(PY) bench/reload_modes.py
	$(PY) bench/actions.py

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache artifacts
