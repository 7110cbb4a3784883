# Two commands on a fresh clone:  `make repro` (set up, then run the pipeline)  and  `make test`.
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
STAMP  := $(VENV)/.installed
export PATH := $(BIN):$(PATH)
export TQDM_MININTERVAL := 5

.PHONY: setup repro test lint

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v java >/dev/null || { echo "error: Java not found: the scorer (pycocoevalcap: PTB tokenizer, METEOR 1.5) needs a JRE, e.g. apt-get install default-jre-headless" >&2; exit 1; }
	python3 -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev,demo]'
	touch $@

repro: $(STAMP)
	dvc repro

lint: $(STAMP)
	ruff check .
	ruff format --check .

test: lint
	pytest
