# postwarden: `make demo` and `make test` work on a fresh Debian 12 machine (as root).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
APT_PACKAGES := postfix postfix-doc libmilter-dev php-cli knot knot-dnsutils redis-server \
	dovecot-core opendkim opendkim-tools dkimpy-milter python3-dkim openssl build-essential python3-venv \
	systemd man-db groff-base prometheus \
	redis-sentinel faketime

# What `make deb` needs on top: Debian's packaging tools (dh-virtualenv carries the
# pinned Python libraries in /opt/venvs/postwarden), lintian, and systemd's
# systemd-analyze for the unit checks of `make deb-check`.
DEB_PACKAGES := build-essential debhelper dh-virtualenv dpkg-dev fakeroot lintian python3-dev python3-venv \
	libmilter-dev groff-base man-db systemd
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' postwarden/__init__.py)
DEB_ARCH := $(shell dpkg --print-architecture)
DEB := postwarden_$(VERSION)_$(DEB_ARCH).deb
DEB_BUILD := .build/deb/postwarden-$(VERSION)

.PHONY: demo test deps deb-deps venv lint typecheck unit e2e bench clean deb deb-check suite-data

# Public test suites, fetched at test time from the installed version's own
# distribution (never committed): RFC 7208's YAML from pyspf's sdist.
PYSPF_SUITE := .build/pyspf/rfc7208-tests.yml

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

deb-deps:
	@$(MAKE) --no-print-directory deps APT_PACKAGES="$(DEB_PACKAGES)"

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

suite-data: $(DKIMPY_DATA) $(PYSPF_SUITE)

$(DKIMPY_DATA): | $(STAMP)
	mkdir -p .build/sdist
	$(VENV)/bin/pip download -q --no-binary :all: --no-deps dkimpy==$(DKIMPY_VERSION) -d .build/sdist
	tar -xzf .build/sdist/dkimpy-$(DKIMPY_VERSION).tar.gz -C .build dkimpy-$(DKIMPY_VERSION)/dkim/tests
	test -d $@ && touch $@

unit: $(STAMP) suite-data
	$(VENV)/bin/pytest -m "not e2e and not load"

$(PYSPF_SUITE): $(STAMP)
	rm -rf .build/pyspf && mkdir -p .build/pyspf/sdist
	v=$$($(PY) -c 'import importlib.metadata as m; print(m.version("pyspf"))') && \
	$(VENV)/bin/pip download -q --no-binary :all: --no-deps -d .build/pyspf/sdist "pyspf==$$v" && \
	tar -xzf .build/pyspf/sdist/pyspf-$$v.tar.gz -C .build/pyspf --strip-components=2 --no-same-owner \
		pyspf-$$v/test/rfc7208-tests.yml pyspf-$$v/test/rfc7208-tests.LICENSE \
		pyspf-$$v/test/testspf.py

e2e: $(STAMP) suite-data
	$(VENV)/bin/pytest -m e2e

bench: $(STAMP)
	$(PY) bench/run.py

# The Debian package, built with Debian's own tools from a copy of the tree with
# packaging/debian as debian/ (a native package: upstream and packaging are one).
deb: deb-deps
	@grep -q "^postwarden ($(VERSION))" packaging/debian/changelog || \
		{ echo "packaging/debian/changelog does not start at version $(VERSION)"; exit 1; }
	rm -rf .build/deb && mkdir -p $(DEB_BUILD)
	tar -c --exclude=./.venv --exclude=./.build --exclude=./.git --exclude='*.deb' \
		--exclude=__pycache__ --exclude=.pytest_cache --exclude=.mypy_cache \
		--exclude=.ruff_cache --exclude='*.egg-info' . | tar -x -C $(DEB_BUILD)
	cp -a packaging/debian $(DEB_BUILD)/debian
	cd $(DEB_BUILD) && dpkg-buildpackage -us -uc -b
	cp .build/deb/$(DEB) .
	lintian --fail-on error,warning\
		.build/deb/postwarden_$(VERSION)_$(DEB_ARCH).changes
	@echo "built $(DEB)"

# Install the .deb on this machine (as root), run the daemon from it as the
# unit would, wire a private Postfix with postfix-setup --apply, then purge and
# check nothing is left. For CI (a fresh machine); it changes the system.
deb-check: $(STAMP) deb
	packaging/deb-check $(DEB)

clean:
	rm -rf .build .pytest_cache .mypy_cache .ruff_cache
