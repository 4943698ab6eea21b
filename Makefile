# Fresh clone → `make train` or `make test`; both create .venv and install the package first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= configs/director.py
STAMP := $(VENV)/.installed

.PHONY: install clatr train evaluate lint test clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# CLaTr (runs/clatr) gives Director's evaluation its FD_CLaTr, P/R/D/C and CLaTr-Score; trained once.
clatr: $(STAMP)
	test -f runs/clatr/eval.json || $(BIN)/python -m storyjax.train --config=configs/clatr.py --workdir=runs/clatr

train: clatr
	$(BIN)/python -m storyjax.train --config=$(CONFIG)

evaluate: $(STAMP)
	$(BIN)/python -m storyjax.evaluate --config=$(CONFIG) --workdir=runs/director

# ruff (settings in pyproject.toml): lint, and the formatting every file must already have.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Two workers, each test file on one worker (module fixtures are shared within a file).
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests

clean:
	rm -rf runs .jax_cache
