# mfa-radius: `make run` (demo server on 127.0.0.1:1812), `make test` (whole suite, real peers).
SHELL := /bin/bash
VENV ?= .venv
# pam_python embeds Debian's Python 3.11: build the venv with that interpreter so the PAM module's
# in-process fallback can import the venv's packages.
PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || command -v python3)
BIN := $(VENV)/bin

# Debian packages: to build the venv, and the real peers the tests drive.
BASE_PKGS := python3-venv
TEST_PKGS := $(BASE_PKGS) oathtool freeradius-utils pamtester libpam-python openssh-server \
	openssh-client libpam-radius-auth libpam-google-authenticator

.PHONY: venv run test sysdeps-base sysdeps-test clean check

define apt_install
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "apt-get install:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "not root: cannot install$$missing (tests that need them will skip)"; \
	  fi; \
	fi
endef

sysdeps-base:
	$(call apt_install,$(BASE_PKGS))

sysdeps-test:
	$(call apt_install,$(TEST_PKGS))

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

venv: sysdeps-base $(BIN)/.installed

run: venv
	$(BIN)/python -m mfa_radius.demo

test: sysdeps-test venv
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) var build *.egg-info .pytest_cache
