# Every target that runs project code depends on `setup`, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# npm packages (package.json, exact versions in package-lock.json): vega, vega-lite and vega-embed,
# inlined by their postinstall into .dvc/plots/template.html, the page `dvc plots show` writes.
NPM_STAMP := node_modules/.installed
# The browser the UI and plots tests drive (Debian's package; Playwright launches it by path).
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Screenshots and pages the browser tests keep.
export GANOPS_TEST_ARTIFACTS ?= $(CURDIR)/test-artifacts
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: setup browser test test-fast test-slow lint format demo augment dvc-remote up down status bench bench-fast bench-data bench-data-prep bench-gpu bench-explore bench-eval bench-pipeline bench-tune tune dashboard clean

setup: $(STAMP) $(NPM_STAMP)

# Re-installs only when the declared or pinned dependencies change.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check "pip==26.3"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

$(NPM_STAMP): package.json package-lock.json .dvc/plots/template.src.html .dvc/plots/build-template.mjs
	@command -v npm >/dev/null || { echo "error: npm not found; install Node.js 18+ and npm (Debian: apt-get install nodejs npm)"; exit 2; }
	npm ci --no-audit --no-fund --loglevel=error
	@touch $(NPM_STAMP)

# Installed once, only when missing (about 65 s); no browser download at test time.
browser: $(CHROMIUM)

$(CHROMIUM):
	$(SUDO) apt-get update -q
	$(SUDO) apt-get install -y -q chromium

# The whole suite (what CI runs): the Prefect server, worker, UI and flow tests included.
test: setup browser
	$(BIN)/python -m pytest -q --durations=25

# The quick subset for iteration: everything not marked slow.
test-fast: setup
	$(BIN)/python -m pytest -m "not slow" -q

# Only the slow end-to-end tests (servers, worker, browser, flows).
test-slow: setup browser
	$(BIN)/python -m pytest -m slow -q --durations=25

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The DVC remote lives outside the repository's tracked tree; `dvc push` / `dvc pull` use it.
DVC_REMOTE ?= $(HOME)/.cache/ganops/dvc-remote

dvc-remote: setup
	@mkdir -p $(DVC_REMOTE)
	@$(BIN)/dvc remote add --local --default --force local $(DVC_REMOTE) >/dev/null

# The whole pipeline (dvc.yaml) on the embedded default: mnist5k, small DCGAN preset.
# `make demo DATA=emoji`: the same stages on Twemoji at 64 px (pipelines/emoji/dvc.yaml, its
# params in params/emoji/, the small DCGAN Twemoji preset, runs/emoji/train), measured at
# 14 min on 2 cores. DATA is read from the command line only, not from an environment variable.
DEMO_DATA := $(if $(filter command line,$(origin DATA)),$(DATA),mnist5k)
ifneq ($(filter demo,$(MAKECMDGOALS)),)
ifeq ($(filter mnist5k emoji,$(DEMO_DATA)),)
$(error DATA=$(DEMO_DATA): make demo runs on mnist5k (the default) or emoji)
endif
endif

demo: dvc-remote
ifeq ($(DEMO_DATA),emoji)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro pipelines/emoji/dvc.yaml
	$(BIN)/ganops summary runs/emoji/train
else
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro
	$(BIN)/ganops summary runs/train
endif

# The GAN data-augmentation experiment on mnist5k (pipelines/augment/dvc.yaml, about 20 min on
# 2 cores); the stages it needs from the demo's pipeline run first.
augment: dvc-remote
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro pipelines/augment/dvc.yaml
	cat reports/augment/mnist5k/conclusion.md

# Prefect server + UI (:4200), MLflow server (:5000), the gpu work pool, deployments, a worker.
up: setup
	$(BIN)/ganops up

down: setup
	$(BIN)/ganops down

status: setup
	$(BIN)/ganops status

bench: setup
	$(BIN)/ganops bench train --family dcgan --image-size 64 --batch-size 64

# The fast profile against the bare fp32 loop, same run (make bench is the exact profile).
bench-fast: setup
	$(BIN)/ganops bench train --family dcgan --image-size 64 --batch-size 64 --profile fast

# Peak RSS at 10,000 vs 200,000 generated images; streamed vs in-memory images/s on mnist5k.
bench-data: setup
	$(BIN)/ganops bench data --processed data/processed/mnist5k/train

# Peak RSS of fetch folder, fetch of an .npy and preprocess on 5,000 and 50,000 generated PNGs.
bench-data-prep: setup
	PYTHONPATH=. $(BIN)/python scripts/bench_data_prep.py --size 5000 --size 50000

# On a GPU host (needs only torch, numpy, pydantic, pyyaml, safetensors, pillow, tqdm):
# DCGAN-64 and StyleGAN at batch 256, exact vs fast; JSON + markdown to BENCH_OUT.
BENCH_OUT ?= reports/bench-gpu
bench-gpu:
	PYTHONPATH=. $(PYTHON) scripts/bench_gpu.py --out $(BENCH_OUT)

# The explorer in headless Chromium: bundle size, first image, 64-image grid (DCGAN-32, StyleGAN).
bench-explore: setup browser
	$(BIN)/python scripts/bench_explore.py

bench-eval: setup
	$(BIN)/ganops bench eval --run-dir runs/train

bench-pipeline: setup
	$(BIN)/python -m flows.bench

# The same study pruned and unpruned on mnist5k (needs `make demo`'s data and classifier first).
bench-tune: setup
	$(BIN)/ganops bench tune --trials 16 --steps 400 --fid-every 100 --set tune.pruner.warmup_steps=100 \
		--pruner successive_halving --pruner median --pruner percentile \
		--set 'tune.space.train.batch_size={choices: [32, 64]}' \
		--set 'tune.space.model.width={low: 16, high: 32, step: 16}'

# A study over params/train.yaml as params/tune.yaml describes (TRIALS=12 WORKERS=1 by default).
TRIALS  ?= 12
WORKERS ?= 1
tune: setup
	$(BIN)/ganops tune params/train.yaml --trials $(TRIALS) --workers $(WORKERS)

# optuna-dashboard on the studies' storage, http://127.0.0.1:8080
dashboard: setup
	$(BIN)/ganops tune params/train.yaml --dashboard

clean:
	rm -rf runs .pytest_cache test-artifacts
