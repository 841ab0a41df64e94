# Entry points for a fresh Debian 12 machine (as root):
#   make demo    set up, boot the lab, deploy the cluster into it, print a summary
#   make test    set up, run every test: unit tests (with coverage), then on a Debian 12 lab
#                and on a Debian 13 lab the lab tests and the fault suite
#   make chaos   the fault suite alone, on the lab of $(RELEASE)
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
FAB := $(VENV)/bin/fab
PYTEST := $(VENV)/bin/pytest -ra -p no:cacheprovider
RELEASE ?= bookworm
APT_PACKAGES := debootstrap systemd-container tinyproxy openssh-client python3-venv iproute2 chromium chromium-driver

.PHONY: setup system venv demo test unit lab-tests chaos lab-up lab-down

setup: system venv

# System packages the control machine needs for the lab; installed only when missing.
system:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

# The venv is rebuilt when the lockfile changes.
venv: $(VENV)/.installed
$(VENV)/.installed: requirements.lock pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.lock
	touch $@

demo: setup
	$(FAB) lab.up --release $(RELEASE)
	$(FAB) deploy
	$(FAB) status

# Unit tests measure the coverage of deploy/ (at least 85 %, see pyproject.toml).
unit: venv
	$(VENV)/bin/coverage run -m pytest -ra -p no:cacheprovider tests/unit
	$(VENV)/bin/coverage report

# One lab per release, one deploy per scenario: the lab tests, then the fault suite on the
# same cluster, then the lab comes down.
lab-tests: setup
	$(FAB) lab.down
	CELERYKIT_LAB_RELEASE=$(RELEASE) $(PYTEST) tests/lab tests/chaos tests/teardown

test: unit
	$(MAKE) lab-tests RELEASE=bookworm
	$(MAKE) lab-tests RELEASE=trixie

chaos: setup
	CELERYKIT_LAB_RELEASE=$(RELEASE) $(PYTEST) tests/chaos

lab-up: setup
	$(FAB) lab.up --release $(RELEASE)

lab-down: venv
	$(FAB) lab.down
