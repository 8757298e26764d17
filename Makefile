# Stockcast: `make help` lists the targets.
SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
DATA ?=
SHARED ?= ../shared/data
LANDING ?= data/landing
# sqlfluff's dbt templater opens the profile's DuckDB file: give it a throwaway one.
SQLFLUFF := STOCKCAST_DUCKDB_PATH=$$(mktemp -d)/lint.duckdb $(UV) run --frozen sqlfluff
# The models must also be valid GoogleSQL: lint them in the BigQuery dialect, compiled for the
# bigquery target (dbt's BigQuery adapter lists datasets while compiling, so against the local
# emulator: scripts/emulators.sh installs it once and starts it).
SQLFLUFF_BIGQUERY := eval "$$(scripts/emulators.sh up)" && STOCKCAST_BQ_DATASET=stockcast_lint $(UV) run --frozen sqlfluff lint --dialect bigquery dbt_project/models

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-12s %s\n", $$1, $$2}'

.PHONY: uv
uv: ## Install uv (the installer) if it is missing
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv

.PHONY: install
# --compile-bytecode: every CLI command is a new process; without compiled site-packages (a
# read-only install, or PYTHONDONTWRITEBYTECODE) each one compiles pandas, MLflow and
# TensorFlow again, 20 s of CPU for `stockcast score`. The first install compiles once (about a
# minute), later ones only check.
install: uv ## Install the locked environment with every extra (TensorFlow included)
	$(UV) sync --frozen --all-extras --compile-bytecode --quiet

.PHONY: demo
demo: install ## Main job end to end on DuckDB + local MLflow (DATA=path runs it on your files)
ifeq ($(strip $(DATA)),)
	$(UV) run --frozen stockcast demo
else
	$(UV) run --frozen stockcast run $(DATA)
endif

.PHONY: test
test: install ## Everything CI runs: lint (ruff, sqlfluff), pytest (real dbt, DuckDB, MLflow)
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(SQLFLUFF) lint dbt_project/models
	$(SQLFLUFF_BIGQUERY)
	$(UV) run --frozen pytest

.PHONY: lint
lint: install ## Lint and format-check Python and SQL
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(SQLFLUFF) lint dbt_project/models
	$(SQLFLUFF_BIGQUERY)

.PHONY: emulators
emulators: ## Start the local BigQuery and GCS emulators: eval "$$(scripts/emulators.sh up)"
	@scripts/emulators.sh up

.PHONY: emulators-down
emulators-down: ## Stop the local emulators
	scripts/emulators.sh down

.PHONY: servers-up
servers-up: ## Start PostgreSQL + MLflow server + Prefect server on 127.0.0.1: eval "$$(scripts/servers.sh up)"
	@scripts/servers.sh up

.PHONY: servers-down
servers-down: ## Stop the local servers (their data stays in ~/.stockcast/servers)
	scripts/servers.sh down

.PHONY: format
format: install ## Apply ruff and sqlfluff fixes
	$(UV) run --frozen ruff format .
	$(UV) run --frozen ruff check --fix .
	$(SQLFLUFF) fix dbt_project/models

.PHONY: benchmark
benchmark: install ## Scale ratios in one run: ingest vs plain pyarrow read, indicators vs TA-Lib, scoring 500 tickers (synthetic universe)
	$(UV) run --frozen python benchmarks/scale.py --shared $(SHARED)

.PHONY: benchmark-large
benchmark-large: install ## benchmark on a SYNTHETIC 2,000 tickers x 20 y (9 M bars): ingest and indicators, no scoring (~10 min)
	$(UV) run --frozen python benchmarks/scale.py --shared $(SHARED) --tickers 2000 --skip-score --out benchmarks/results/scale_2000.json

.PHONY: benchmark-run
benchmark-run: install ## Full run on all 150 tickers of ../shared/data/yahoo_sp500_daily, timed per stage
	$(UV) run --frozen python benchmarks/bench_run.py --data $(SHARED)/yahoo_sp500_daily

.PHONY: benchmark-indicators
benchmark-indicators: install ## Indicator mart vs TA-Lib, full build and one-day incremental (all shared tickers)
	$(UV) run --frozen python benchmarks/indicator_speed.py --data $(SHARED)

.PHONY: forecast-quality
forecast-quality: install ## Walk-forward backtests behind docs/forecast-quality.md (main, regimes, ablation; ~20 min)
	$(UV) run --frozen python benchmarks/forecast_quality.py --data $(SHARED)/yahoo_sp500_daily

.PHONY: backtest-speed
backtest-speed: install ## Time a 4-fold backtest of 38 tickers per model (target: 5 min on 2 cores)
	$(UV) run --frozen python benchmarks/backtest_speed.py --data $(SHARED)/yahoo_sp500_daily

.PHONY: watch
watch: install ## Load files dropped into LANDING (default ./data/landing) with the daily flow, until Ctrl-C
	mkdir -p $(LANDING)
	$(UV) run --frozen stockcast watch $(LANDING)

.PHONY: serve
serve: install ## Serve the daily and weekly retrain flows on their schedules (Prefect), until Ctrl-C
	mkdir -p $(LANDING)
	$(UV) run --frozen stockcast serve --landing $(LANDING)

.PHONY: dashboard
dashboard: install ## Serve the dashboard on http://127.0.0.1:8501 (PORT=N; DEMO=1 shows what `make demo` built)
	$(UV) run --frozen stockcast dashboard --port $(or $(PORT),8501) $(if $(DEMO),--demo,)

.PHONY: mlflow-ui
mlflow-ui: install ## Open the MLflow UI on http://127.0.0.1:5000 over the local store
	$(UV) run --frozen mlflow ui --backend-store-uri $${MLFLOW_TRACKING_URI:-sqlite:///data/mlflow/mlflow.db} --host 127.0.0.1 --port 5000

.PHONY: clean
clean: ## Remove the local warehouse, MLflow store and dbt artefacts (./data)
	rm -rf data dbt_project/target dbt_project/logs
