# postwarden: `make demo` and `make test` work on a fresh Debian 12 machine (as root).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
APT_PACKAGES := postfix postfix-doc libmilter-dev php-cli knot knot-dnsutils redis-server \
	dovecot-core opendkim opendkim-tools dkimpy-milter python3-dkim openssl build-essential python3-venv

.PHONY: demo test deps venv lint typecheck unit e2e bench clean suite-data

demo: $(STAMP)
	$(PY) demo/run_demo.py

test: $(STAMP) lint typecheck suite-data
	$(VENV)/bin/pytest

deps:
	@missing=""; for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

venv: $(STAMP)

$(STAMP): pyproject.toml | deps
	test -x $(PY) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check postwarden milter checks tests bench demo

# mypy sees milter/ and checks/ under their import names through a symlink tree,
# exactly as setuptools' package-dir maps them.
typecheck: $(STAMP)
	@rm -rf .build/typecheck && mkdir -p .build/typecheck/postwarden
	@for f in postwarden/*; do ln -s "$$PWD/$$f" .build/typecheck/postwarden/; done
	@ln -s "$$PWD/milter" .build/typecheck/postwarden/milter
	@ln -s "$$PWD/checks" .build/typecheck/postwarden/checks
	cd .build/typecheck && ../../$(VENV)/bin/mypy --config-file ../../pyproject.toml -p postwarden

# Public test suites' data, fetched from PyPI source distributions at test-setup
# time into .build/ (never committed): dkimpy's own test messages and keys.
DKIMPY_VERSION := 1.1.8
DKIMPY_DATA := .build/dkimpy-$(DKIMPY_VERSION)/dkim/tests/data

suite-data: $(DKIMPY_DATA)

$(DKIMPY_DATA): | $(STAMP)
	mkdir -p .build/sdist
	$(VENV)/bin/pip download -q --no-binary :all: --no-deps dkimpy==$(DKIMPY_VERSION) -d .build/sdist
	tar -xzf .build/sdist/dkimpy-$(DKIMPY_VERSION).tar.gz -C .build dkimpy-$(DKIMPY_VERSION)/dkim/tests
	test -d $@ && touch $@

unit: $(STAMP) suite-data
	$(VENV)/bin/pytest -m "not e2e and not load"

e2e: $(STAMP) suite-data
	$(VENV)/bin/pytest -m e2e

bench: $(STAMP)
	$(PY) bench/run.py

clean:
	rm -rf .build .pytest_cache .mypy_cache .ruff_cache
