# The two commands the README opens with: `make demo` and `make test`.
# Each installs what it needs: Debian packages once, then a virtual environment.

VENV ?= .venv
PY := $(VENV)/bin/python
DEBS := etcd-server haproxy bubblewrap
# gcc builds the library a tenant would name in LD_PRELOAD (tests/unit/test_sandbox_variables.py).
# zsh runs the CLI's zsh completion in the tests.
TEST_DEBS := chromium chromium-driver cloud-init gcc libc6-dev zsh
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# OpenStack's services live in a virtual environment of their own, pinned by
# the release's constraints (tests/openstack/).
OS_VENV ?= .venv-openstack
OS_STAMP := $(OS_VENV)/.installed
OS_DEBS := mariadb-server rabbitmq-server
OS_CONSTRAINTS := tests/openstack/upper-constraints-2026.1.txt
OS_PACKAGES := 'keystone<30' 'openstack-placement<16' 'nova<34' 'neutron<29' 'glance<33' \
	python-openstackclient uwsgi PyMySQL
# Node images (elements/): diskimage-builder and what its Debian builds run.
# dpkg-dev and gnupg sign the stand-in Kubernetes repository of the tests.
IMAGE_DEBS := debootstrap qemu-utils kpartx squashfs-tools sudo shellcheck dpkg-dev gnupg
IMAGE_STAMP := $(VENV)/.installed-image
ROLE ?= gateway
IMAGE_TYPE ?= qcow2

.PHONY: demo gateway-demo test lint typecheck bench deps test-deps clean screenshots
.PHONY: openstack openstack-deps image image-deps

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

test-deps: $(TEST_STAMP) $(OS_STAMP) $(IMAGE_STAMP)

$(TEST_STAMP): $(STAMP)
	$(call apt_install,$(TEST_DEBS))
	$(PY) -m pip install -q -e '.[test]'
	@touch $(TEST_STAMP)

openstack-deps: $(OS_STAMP)

$(OS_STAMP): $(OS_CONSTRAINTS) tests/openstack/bind_all/pyproject.toml \
		tests/openstack/bind_all/marina_bind_all/__init__.py
	$(call apt_install,$(OS_DEBS))
	@test -x $(OS_VENV)/bin/python || python3 -m venv $(OS_VENV)
	$(OS_VENV)/bin/pip install -q --upgrade pip
	$(OS_VENV)/bin/pip install -q -c $(OS_CONSTRAINTS) $(OS_PACKAGES)
	$(OS_VENV)/bin/pip install -q ./tests/openstack/bind_all
	@touch $(OS_STAMP)

# A real OpenStack control plane on loopback until Ctrl-C (docs/openstack.md).
openstack: $(OS_STAMP) $(VENV)/.installed-openstack
	$(PY) -m tests.openstack $(if $(OS_DIR),--dir $(OS_DIR))

$(VENV)/.installed-openstack: $(STAMP)
	$(PY) -m pip install -q -e '.[openstack]'
	@touch $@

image-deps: $(IMAGE_STAMP)

$(IMAGE_STAMP): $(STAMP)
	$(call apt_install,$(IMAGE_DEBS))
	$(PY) -m pip install -q -e '.[images]'
	@touch $(IMAGE_STAMP)

# A node image from elements/: make image ROLE=gateway|master|worker [IMAGE_TYPE=tar]
image: $(IMAGE_STAMP)
	$(PY) -m tests.elements.building --role $(ROLE) --type $(IMAGE_TYPE)

# `make demo PORT=8788 ETCD_PORT=23800` when the default ports are taken.
PORT ?= 8787
ETCD_PORT ?= 23790

demo: deps
	$(VENV)/bin/marina demo --port $(PORT) --etcd-port $(ETCD_PORT)

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
	rm -rf $(VENV) $(OS_VENV) .cache build *.egg-info .mypy_cache .ruff_cache .pytest_cache artifacts
