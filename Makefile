# Two commands on a fresh clone:  `make repro` (set up, then run the pipeline)  and  `make test`.
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
STAMP  := $(VENV)/.installed
export PATH := $(BIN):$(PATH)
export TQDM_MININTERVAL := 5

.PHONY: setup repro test lint lock coverage

setup: $(STAMP)

# Exactly the versions in requirements.lock (hash-checked), then the project itself without resolving anything.
$(STAMP): requirements.lock pyproject.toml
	@command -v java >/dev/null || { echo "error: Java not found: the scorer (pycocoevalcap: PTB tokenizer, METEOR 1.5) needs a JRE, e.g. apt-get install default-jre-headless" >&2; exit 1; }
	python3 -m venv $(VENV)
	$(BIN)/pip install --require-hashes --no-deps -r requirements.lock
	$(BIN)/pip install --no-deps --no-build-isolation -e .
	touch $@

# Regenerate the lock from pyproject.toml; versions already locked are kept unless UPGRADE=1.
lock:
	python3 -m venv .lock-venv && .lock-venv/bin/pip install -q pip-tools
	.lock-venv/bin/pip-compile -q --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
		--no-emit-find-links --extra dev --extra demo --extra ssh --build-deps-for editable $(if $(UPGRADE),--upgrade) \
		-o requirements.lock pyproject.toml

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
