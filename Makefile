# Two commands on a fresh clone:  `make repro` (set up, then run the pipeline)  and  `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
STAMP  := $(VENV)/.installed
export PATH := $(BIN):$(PATH)
export TQDM_MININTERVAL := 5

.PHONY: setup repro test lint lock lock-installs coverage

setup: $(STAMP)

# The Pythons requirements.lock is resolved and tested for (docs/reproducibility.md), checked before anything is
# downloaded. Written for any python, 2.7 included, so that an old one gets this line and not a syntax error.
SUPPORTED := CPython 3.10-3.13
define CHECK_PYTHON
import platform, sys
version = platform.python_version()
if platform.python_implementation() != "CPython" or not (3, 10) <= sys.version_info[:2] <= (3, 13):
    sys.exit("error: $(PYTHON) is %s %s; this project supports $(SUPPORTED) (make setup PYTHON=python3.13, say)" % (platform.python_implementation(), version))
endef
export CHECK_PYTHON

# Exactly the versions in requirements.lock for this Python (hash-checked; pip picks the lines whose markers match),
# then the project itself without resolving anything.
$(STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; this project needs $(SUPPORTED) (make setup PYTHON=/path/to/python3)" >&2; exit 1; }
	@$(PYTHON) -c "$$CHECK_PYTHON"
	@command -v java >/dev/null || { echo "error: Java not found: the scorer (pycocoevalcap: PTB tokenizer, METEOR 1.5) needs a JRE, e.g. apt-get install default-jre-headless" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --require-hashes --no-deps -r requirements.lock
	$(BIN)/pip install --no-deps --no-build-isolation -e .
	touch $@

# Regenerate the lock from pyproject.toml: one file for every supported Python and the platforms of [tool.uv]
# environments, a line per version with its markers; versions already locked are kept unless UPGRADE=1.
UV_VERSION := 0.13.10
UV := .lock-venv/bin/uv
$(UV):
	$(PYTHON) -m venv .lock-venv && .lock-venv/bin/pip install -q uv==$(UV_VERSION)

lock: $(UV)
	$(UV) pip compile -q --universal --python-version 3.10 --generate-hashes --custom-compile-command "make lock" \
		--extra dev --extra demo --extra ssh --group build $(if $(UPGRADE),--upgrade) -o requirements.lock pyproject.toml

# The lock installs on the supported Pythons the suite does not run on (CI runs it on one): each into a throwaway
# venv, the hash-checked lock and the project, then the tests of the lock, of training and of the stages' bad input,
# checkpoints, forks and full disks. A Python the check above refuses gets the install and an import only. uv
# downloads in parallel and keeps one cache of the wheels the Pythons share (torch's CUDA libraries); `make setup`
# stays plain pip, which reuses wheels already here.
LOCK_PYTHONS ?= python3.10 python3.12 python3.13
LOCK_TESTS ?= tests/test_lock.py tests/test_cross_entropy.py tests/test_stages.py tests/test_io.py tests/test_checkpoint.py \
	tests/test_cli.py
lock-installs: $(UV)
	@set -e; for python in $(LOCK_PYTHONS); do \
		venv=$$(mktemp -d)/venv; start=$$(date +%s); \
		$(UV) venv -q --python "$$python" $$venv; \
		$(UV) pip install -q --python $$venv/bin/python --require-hashes --no-deps -r requirements.lock; \
		$(UV) pip install -q --python $$venv/bin/python --no-deps --no-build-isolation -e .; \
		installed=$$(date +%s); \
		if $$venv/bin/python -c "$$CHECK_PYTHON" 2>/dev/null; then \
			$$venv/bin/python -m pytest -q -p no:cacheprovider -o addopts="-n auto --dist worksteal" -m "not slow" $(LOCK_TESTS); \
		else echo "$$python: refused by make setup, so installed and imported only"; \
			$$venv/bin/python -c "import torch, torchvision, dvc.api, gensim, h5py, pandas, captioning.model"; fi; \
		echo "$$($$venv/bin/python -V): installed in $$((installed - start)) s, checked in $$(($$(date +%s) - installed)) s"; \
		rm -rf $$(dirname $$venv); \
	done

repro: $(STAMP)
	dvc repro

lint: $(STAMP)
	ruff check .
	ruff format --check .

test: lint
	pytest

# Line coverage of captioning/ and stages/ by the whole suite, the stage processes the tests start included
# ([tool.coverage] in pyproject.toml): the total and each module's missed lines.
coverage: $(STAMP)
	rm -f .coverage .coverage.*
	coverage run -m pytest -p no:cacheprovider
	coverage combine -q
	coverage report --show-missing
