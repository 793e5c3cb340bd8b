# mfa-radius: `make run` (demo server on 127.0.0.1:1812), `make test` (whole suite, real peers).
SHELL := /bin/bash
VENV ?= .venv
# pam_python embeds Debian's Python 3.11: build the venv with that interpreter so the PAM module's
# in-process fallback can import the venv's packages.
PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || command -v python3)
BIN := $(VENV)/bin

# Debian packages: to build the venv, and the real peers the tests drive.
BASE_PKGS := python3-venv
TEST_PKGS := $(BASE_PKGS) slapd ldap-utils oathtool freeradius freeradius-utils pamtester libpam-python openssh-server \
	openssh-client libpam-radius-auth libpam-google-authenticator zbar-tools postgresql
# The demo's UDP port: `make run PORT=18120` when 1812 is taken (by FreeRADIUS, say).
PORT ?= 1812

.PHONY: venv run test lint sysdeps-base sysdeps-test clean

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

# Two stamps: what the demo needs (the project and its dependencies), then the test extras
# (pytest, hypothesis, ruff, mypy), which `make run` does not install.
$(BIN)/.runtime: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e .
	touch $@

$(BIN)/.installed: $(BIN)/.runtime
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

venv: sysdeps-base $(BIN)/.installed

run: sysdeps-base $(BIN)/.runtime
	@$(BIN)/python -m mfa_radius.demo --port $(PORT)

test: sysdeps-test venv
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) var build *.egg-info .pytest_cache

# Benchmarks side by side with FreeRADIUS + rlm_totp and google-authenticator-libpam.
# `make bench BENCH_ARGS=--quick` for a short run; method and results in docs/benchmarks.md.
.PHONY: bench
bench: venv
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# The RADIUS server's cost per request of this checkout against another one with its own .venv
# (`make bench-compare BASE=../other`): instructions under callgrind, which a busy machine does not
# move; MODE=cpu for CPU time in alternating rounds. Method in docs/benchmarks.md.
BASE ?=
MODE ?= callgrind
.PHONY: bench-compare
bench-compare: venv
	@test -n "$(BASE)" || { echo "make bench-compare BASE=DIR: DIR is the checkout to compare with"; exit 2; }
	$(if $(filter callgrind,$(MODE)),$(call apt_install,valgrind))
	$(BIN)/python bench/instructions.py --checkout $(BASE) --checkout . --mode $(MODE) $(BENCH_ARGS)

# ---- make install [DESTDIR=/tmp/root] [PREFIX=/opt/mfa-radius] ---------------------------------
# A virtualenv at $(PREFIX) with mfa-radius installed from a wheel (not editable), the PAM module in
# $(PREFIX)/pam_module (precompiled: pam_python writes no .pyc), the systemd unit, docs, and the
# example configs in /etc only where absent: an edited conf is never overwritten, the new example
# lands next to it as FILE.dist. Paths inside the venv name $(PREFIX), never $(DESTDIR).
PREFIX ?= /opt/mfa-radius
DESTDIR ?=
UNITDIR ?= /lib/systemd/system
SYSCONFDIR ?= /etc
SBINDIR ?= /usr/local/sbin
DEST := $(DESTDIR)$(PREFIX)
DOCDIR := $(DEST)/share/doc/mfa-radius

# install_conf SRC DST MODE: install unless DST exists; a differing DST is kept, SRC goes to DST.dist.
define install_conf
	@if [ ! -e "$(2)" ]; then \
	  install -m $(3) "$(1)" "$(2)" && echo "installed $(2)"; \
	elif cmp -s "$(1)" "$(2)"; then \
	  echo "unchanged $(2)"; \
	else \
	  install -m $(3) "$(1)" "$(2).dist" && echo "kept your $(2); the new example is $(2).dist"; \
	fi
endef

# The unit names $(PREFIX) and $(SYSCONFDIR), whatever they are.
.PHONY: install-unit
install-unit:
	install -d -m 0755 $(DESTDIR)$(UNITDIR)
	sed -e "s#/opt/mfa-radius#$(PREFIX)#g" -e "s#/etc/mfa-radius/#$(SYSCONFDIR)/mfa-radius/#g" \
	  systemd/mfa-radius.service > $(DESTDIR)$(UNITDIR)/mfa-radius.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/mfa-radius.service

.PHONY: install
install: sysdeps-base install-unit
	test -x $(DEST)/bin/python || $(PYTHON) -m venv $(DEST)
	@# build/ is scratch: a stale build/lib would put deleted modules back into the wheel.
	rm -rf build
	$(DEST)/bin/python -m pip wheel -q --disable-pip-version-check --no-deps -w build/wheel .
	$(DEST)/bin/python -m pip install -q --disable-pip-version-check --no-compile build/wheel/mfa_radius-*.whl
	@# Same version number on a reinstall: force the project itself (not its dependencies).
	$(DEST)/bin/python -m pip install -q --disable-pip-version-check --no-compile --no-deps \
	  --force-reinstall build/wheel/mfa_radius-*.whl
	@# Compiled here, not by pip, so that tracebacks name $(PREFIX) paths, not $(DESTDIR) ones.
	$(DEST)/bin/python -m compileall -q -j 0 $(if $(DESTDIR),-f -s $(DESTDIR) -p /) $(DEST)/lib
	@if [ -n "$(DESTDIR)" ]; then \
	  grep -rlIZ -F -- "$(DEST)" $(DEST)/bin $(DEST)/pyvenv.cfg \
	    | xargs -0 -r sed -i "s#$(DEST)#$(PREFIX)#g"; \
	fi
	install -d -m 0755 $(DEST)/pam_module
	install -m 0644 pam_module/pam_mfa.py pam_module/pam_mfa_impl.py $(DEST)/pam_module/
	rm -rf $(DEST)/pam_module/__pycache__
	$(PYTHON) -m compileall -q -d $(PREFIX)/pam_module $(DEST)/pam_module
	install -d -m 0755 $(DOCDIR)/examples
	install -m 0644 README.md CHANGELOG.md docs/*.md $(DOCDIR)/
	cp -r conf/. $(DOCDIR)/examples/
	install -d -m 0755 $(DESTDIR)$(SBINDIR)
	ln -sfn $(PREFIX)/bin/mfa-radius $(DESTDIR)$(SBINDIR)/mfa-radius
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/mfa-radius $(DESTDIR)$(SYSCONFDIR)/pam.d
	$(call install_conf,conf/mfa-radius.toml,$(DESTDIR)$(SYSCONFDIR)/mfa-radius/mfa-radius.toml,0640)
	$(call install_conf,conf/pam.d/mfa-radius,$(DESTDIR)$(SYSCONFDIR)/pam.d/mfa-radius,0644)
	@echo "next: mfa-radius$(if $(filter-out /etc,$(SYSCONFDIR)), --config $(SYSCONFDIR)/mfa-radius/mfa-radius.toml) init; systemctl daemon-reload; systemctl enable --now mfa-radius"
	@echo "      (docs/operations.md; PAM: auth required pam_python.so $(PREFIX)/pam_module/pam_mfa.py)"
