# frontdoor.pki — everything a fresh clone needs goes through these targets.
# Python 3.11 + pip + make + git is all a machine needs; the rest comes from PyPI into .venv
# (and, for `make step-ca`, from Debian's packages).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: all venv lock demo test lint unit sanity test-step-ca step-ca test-lego lego haproxy test-failover bench bench-ansible failover fuzz build clean help

all: test

help:
	@echo "make demo       build .venv, run the reference workflow over HTTPS on the embedded default, show the certificate"
	@echo "make test       build .venv if needed and run every test (lint, pytest incl. OpenBao and Ansible, sanity, step-ca)"
	@echo "make bench      benchmarks: redemptions/s vs OpenBao pki/sign, latency vs stored tokens (not part of test)"
	@echo "make bench-ansible  20 hosts enrolled by frontdoor.pki.enroll vs community.crypto (ownca), wall times"
	@echo "make failover   3-node OpenBao raft cluster + gateways behind HAProxy: kill the leader under racing load (~2 min)"
	@echo "make fuzz       long Schemathesis run over /openapi.json, every phase incl. stateful (FUZZ_MINUTES=15)"
	@echo "make step-ca    build the step-ca binary into .venv/bin from Debian's packages"
	@echo "make lego       install the lego ACME client from Debian's packages (second real ACME client of the tests)"
	@echo "make sanity     ansible-test sanity on the collection"
	@echo "make lock       refresh requirements.txt / requirements-test.txt (pip-compile) from the .in files"
	@echo "make build      ansible-galaxy collection build"

# Installs come only from the locks (exact versions made by pip-tools): requirements.txt (runtime) and
# requirements-test.txt (runtime + tests + tools, pip and setuptools included). The project itself is installed
# without build isolation, so its build backend is the locked setuptools too: nothing unpinned is fetched.
PIP := $(PY) -m pip --disable-pip-version-check
$(STAMP): requirements.txt requirements-test.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet -r requirements-test.txt
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	touch $@

venv: $(STAMP)

# Refresh the locks from requirements.in / requirements-test.in (the supported ranges) to the newest releases
# that resolve on this Python, then reinstall. Commit the two .txt files after `make test` passes on them.
PIP_COMPILE := $(VENV)/bin/pip-compile --quiet --allow-unsafe --strip-extras --no-emit-index-url --upgrade
lock: venv
	$(PIP_COMPILE) -o requirements.txt requirements.in
	cp requirements.txt roles/gateway/files/requirements.txt  # the lock the gateway role installs on hosts
	$(PIP_COMPILE) -o requirements-test.txt requirements-test.in
	$(PIP) install --quiet -r requirements-test.txt
	touch $(STAMP)

demo: venv
	$(PY) -m frontdoor_gateway.demo

lint: venv
	$(VENV)/bin/ruff check .

unit: venv
	$(PY) -m pytest tests -m "not stepca and not lego and not failover" $(PYTEST_ARGS)

sanity: venv
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/sanity.sh

test: venv lint unit sanity test-step-ca test-lego test-failover

step-ca: venv
	bash scripts/build-step-ca.sh "$(VENV)/bin/step-ca"

# step-ca is built from Debian's packages, which needs apt-get (CI runs as root). Where that is
# impossible the step-ca tests are not run, and this says so loudly rather than pretending.
test-step-ca: venv
	@if [ -x "$(VENV)/bin/step-ca" ] || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; }; then \
		$(MAKE) step-ca && $(PY) -m pytest tests -m stepca $(PYTEST_ARGS); \
	else \
		echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"; \
		echo "!!! step-ca tests NOT RUN: apt-get as root is needed to build step-ca (make step-ca)  !!!"; \
		echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"; \
	fi

bench: venv
	$(PY) -m bench $(BENCH_ARGS)

# community.crypto is not in the locks: the bench takes it from the ansible wheel on PyPI (cached in .tmp/).
bench-ansible: venv
	$(PY) -m bench.ansible_fleet $(BENCH_ANSIBLE_ARGS)

# Leader failover under racing redemptions (docs/operations.md, "Several gateways on an OpenBao raft cluster").
# Needs HAProxy (Debian: apt-get install haproxy); not part of test. FAILOVER_ARGS="--vault-route any" etc.
failover: venv haproxy
	$(PY) -m bench.failover $(FAILOVER_ARGS)

# The API contract, long: tests/fuzz/test_openapi_contract.py with many examples for up to FUZZ_MINUTES, a new seed
# each run (make test runs the same test CI-sized, 2 x 45 s, fixed seed). FUZZ_RATE_LIMITS=on keeps the limits on.
FUZZ_MINUTES ?= 15
FUZZ_RATE_LIMITS ?= off
fuzz: venv
	FRONTDOOR_FUZZ=long FRONTDOOR_FUZZ_MINUTES=$(FUZZ_MINUTES) FRONTDOOR_FUZZ_RATE_LIMITS=$(FUZZ_RATE_LIMITS) \
		$(PY) -m pytest tests/fuzz -q -s $(PYTEST_ARGS)

build: venv
	$(VENV)/bin/ansible-galaxy collection build --force --output-path build/

clean:
	rm -rf build dist .pytest_cache .ruff_cache tests/output

# lego (a Go ACME client) comes from Debian's packages, as root with apt-get (as CI runs); it is the ACME front's
# second real client (tests/acme/test_lego.py, marker lego). Where that is impossible the lego tests are not run,
# and this says so loudly rather than pretending.
lego:
	command -v lego >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq lego; }

test-lego: venv
	@if command -v lego >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; }; then \
		$(MAKE) lego && $(PY) -m pytest tests -m lego $(PYTEST_ARGS); \
	else \
		echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"; \
		echo "!!! lego tests NOT RUN: apt-get as root is needed to install lego (make lego)        !!!"; \
		echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"; \
	fi

# HAProxy (Debian's package) for the raft failover smoke test (tests/vault/test_raft_failover.py, marker failover,
# ~1 min) and make failover. Where apt-get as root is impossible the test is not run, and this says so loudly.
haproxy:
	command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy; }

test-failover: venv
	@if command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; }; then \
		$(MAKE) haproxy && $(PY) -m pytest tests -m failover $(PYTEST_ARGS); \
	else \
		echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"; \
		echo "!!! failover test NOT RUN: apt-get as root is needed to install haproxy (make haproxy) !!!"; \
		echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"; \
	fi
