# unmix: `make demo` separates the bundled example, `make test` runs the test suite.
# Both create .venv/ on first use with a Python 3.10 interpreter (NNabla 1.39 ships
# wheels for Python 3.8-3.10 only), install the package with its test extras, and,
# when run as root, the apt packages it needs (ffmpeg).

VENV     := .venv
PY       := $(VENV)/bin/python
STAMP    := $(VENV)/.installed
APT_PKGS := ffmpeg

.PHONY: test demo venv apt clean

test: $(STAMP)
	$(PY) -m pytest tests

demo: $(STAMP)
	$(PY) -m unmix demo --outdir separated/demo

venv: $(STAMP)

$(STAMP): pyproject.toml | apt
	@if [ ! -x $(PY) ]; then \
	  py=$$(scripts/find-python310); \
	  echo "creating $(VENV) with $$py"; \
	  $$py -m venv $(VENV); \
	fi
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@echo "compiling the numba kernels (once)"
	$(PY) -c "import unmix.separator; unmix.separator.warm_up_kernels()"
	@touch $(STAMP)

apt:
	@missing=""; for p in $(APT_PKGS); do command -v $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing apt packages:$$missing"; \
	    (apt-get install -y -q $$missing >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null && apt-get install -y -q $$missing >/dev/null)) || \
	     { echo "apt-get install$$missing failed"; exit 1; }; \
	  else \
	    echo "warning: missing$$missing; install with: sudo apt-get install$$missing (needed for mp3/mp4 audio)"; \
	  fi; \
	fi

clean:
	rm -rf $(VENV) build *.egg-info
