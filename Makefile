# Two entry points for a fresh Debian 12 machine (as root):
#   make demo   set up, boot the lab, deploy the cluster into it, print a summary
#   make test   set up, run every test (unit + lab)
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
FAB := $(VENV)/bin/fab
APT_PACKAGES := debootstrap systemd-container tinyproxy openssh-client python3-venv iproute2 chromium chromium-driver

.PHONY: setup system venv demo test unit lab-up lab-down

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
	$(FAB) lab.up
	$(FAB) deploy
	$(FAB) status

test: setup
	$(VENV)/bin/pytest -ra

unit: venv
	$(VENV)/bin/pytest -ra tests/unit

lab-up: setup
	$(FAB) lab.up

lab-down: venv
	$(FAB) lab.down
