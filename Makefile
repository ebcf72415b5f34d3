# unmix: `make demo` separates the bundled example, `make test` runs the test suite.
# Both create .venv/ on first use with a Python 3.10 interpreter (NNabla 1.39, needed to
# train, ships wheels for Python 3.8-3.10 only), install the package with its test and train
# extras, and, when run as root, the apt packages it needs (ffmpeg, JACK and PortAudio, Chromium).
# `make test-py312` runs the NNabla-free tests (separate, convert, export, evaluate, ...) in
# .venv312/ under Python 3.12, installed without NNabla as `pip install unmix` installs it.

VENV     := .venv
PY       := $(VENV)/bin/python
STAMP    := $(VENV)/.installed
VENV312  := .venv312
PY312    := $(VENV312)/bin/python
STAMP312 := $(VENV312)/.installed
# ffmpeg: mp3/m4a/.stem.mp4; jackd2 + libportaudio2: live streaming (and its tests, on JACK's dummy
# backend); chromium + chromium-driver: the web app's browser test
APT_PKGS := ffmpeg jackd2 libportaudio2 chromium chromium-driver

.PHONY: test test-py312 demo venv apt clean

# tests/ and the song generator's own tests (tools/musdb_synth/tests: numpy and scipy only)
TESTS    := tests tools/musdb_synth/tests

test: $(STAMP)
	$(PY) -m pytest $(TESTS)

# tests marked `nnabla` (see tests/conftest.py) need NNabla; everything else runs without it
test-py312: $(STAMP312)
	$(PY312) -m pytest $(TESTS) -m "not nnabla"

demo: $(STAMP)
	$(PY) -m unmix demo --model bundled --outdir separated/demo

venv: $(STAMP)

# $(call new_venv,DIR,PYTHON_VERSION): create DIR with that Python unless it exists; upgrade its pip
define new_venv
	@if [ ! -x $(1)/bin/python ]; then \
	  py=$$(scripts/find-python $(2)); \
	  echo "creating $(1) with $$py"; \
	  $$py -m venv $(1); \
	fi
	$(1)/bin/python -m pip install -q --upgrade pip
endef

$(STAMP): pyproject.toml | apt
	$(call new_venv,$(VENV),3.10)
	$(PY) -m pip install -q -e '.[test,train]'
	@echo "compiling the numba kernels (once)"
	$(PY) -c "import unmix.separation.separator; unmix.separation.separator.warm_up_kernels()"
	@touch $(STAMP)

$(STAMP312): pyproject.toml | apt
	$(call new_venv,$(VENV312),3.12)
	$(PY312) -m pip install -q '.[test]'
	@touch $(STAMP312)

apt:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing apt packages:$$missing"; \
	    (DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null)) || \
	     { echo "apt-get install$$missing failed"; exit 1; }; \
	  else \
	    echo "warning: missing$$missing; install with: sudo apt-get install$$missing (mp3/mp4 audio, live streaming, the browser test)"; \
	  fi; \
	fi

clean:
	rm -rf $(VENV) $(VENV312) build *.egg-info
