# Every target that runs project code depends on `setup`, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: setup test test-slow test-all lint format demo bench clean

setup: $(STAMP)

# Re-installs only when the declared or pinned dependencies change.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check "pip==26.3"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

test: setup
	$(BIN)/python -m pytest -m "not slow" -q

test-slow: setup
	$(BIN)/python -m pytest -m slow -q

test-all: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

DEMO_RUN ?= runs/demo

demo: setup
	$(BIN)/ganops data fetch mnist5k --name mnist5k
	$(BIN)/ganops train params/dcgan-mnist5k-small.yaml --run-dir $(DEMO_RUN) --resume
	$(BIN)/ganops sample $(DEMO_RUN) -n 64 --seed 0 -o $(DEMO_RUN)/grid.png
	@echo "demo done: sample grid at $(DEMO_RUN)/grid.png"

bench: setup
	$(BIN)/ganops bench train --family dcgan --image-size 64 --batch-size 64

clean:
	rm -rf runs .pytest_cache
