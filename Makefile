# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create .venv once and reuse it (and Ivy's Delta jar cache) on later runs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
N_TRANSACTIONS ?= 1000000
PYTEST_ARGS ?=
BENCH_SIZES ?= 1000000,10000000,100000000
BENCH_SHUFFLE_SIZE ?= 10000000

.PHONY: demo test lint bench clean check-java install

check-java:
	@command -v java >/dev/null 2>&1 || { echo "error: Spark 4 needs Java 17+, but 'java' is not on PATH. Install a JDK 17 (apt-get install openjdk-17-jre-headless)." >&2; exit 1; }
	@v=$$(java -version 2>&1 | awk -F'"' '/version/ {print $$2; exit}'); major=$${v%%.*}; \
	  [ "$$major" = "1" ] && major=$$(echo $$v | cut -d. -f2); \
	  if [ "$${major:-0}" -lt 17 ] 2>/dev/null; then echo "error: Spark 4 needs Java 17+, found Java $$v at $$(command -v java)." >&2; exit 1; fi

$(STAMP): setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==25.3
	$(BIN)/pip install --quiet -c constraints.txt -e '.[spark,dev]'
	touch $(STAMP)

install: check-java $(STAMP)

demo: install
	$(BIN)/python jobs/generate_transactions.py --set generator.n_transactions=$(N_TRANSACTIONS)
	$(BIN)/python jobs/build_features.py --set input.customers.enabled=true
	$(BIN)/python jobs/train_clv.py
	$(BIN)/python jobs/train_segments.py --set training.ground_truth.enabled=true
	$(BIN)/python jobs/score_customers.py
	@echo ""
	@echo "Outputs (Delta tables under ./data):"
	@echo "  transactions  data/transactions    customers   data/customers      ground truth  data/ground_truth"
	@echo "  features      data/features        quarantine  data/features_quarantine   quality  data/features_quality"
	@echo "  segments      data/segment_assignments   profiles  data/segment_profiles"
	@echo "  scoring       data/segments_current      history   data/segments_history"
	@echo "  CLV           data/customer_clv (P(alive), expected purchases, CLV; also in segments_current)"
	@echo "Segment report: reports/segment_report_<as_of>_<model version>.html (also on the training run in MLflow)"
	@echo "MLflow runs: mlflow.db (artifacts in ./mlartifacts); registered models customer-segments@champion, customer-clv@champion"
	@echo "Compare the runs in the MLflow UI (localhost only):"
	@echo "  $(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000"

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Not part of `make test`: hours at 100M rows. Results in benchmarks/results/ (see docs/performance.md).
bench: install
	$(BIN)/python benchmarks/run.py --sizes $(BENCH_SIZES) --out benchmarks/results
	$(BIN)/python benchmarks/kmeans_solvers.py --out benchmarks/results
	$(BIN)/python benchmarks/native_blas.py --out benchmarks/results
	$(BIN)/python benchmarks/pip_requirements.py --out benchmarks/results
	$(BIN)/python benchmarks/shuffle_partitions.py --size $(BENCH_SHUFFLE_SIZE) --partitions 4,16,64,4 --out benchmarks/results
	$(BIN)/python benchmarks/sweep_parallelism.py --size 1000000 --parallelism 1,2 --out benchmarks/results
	$(BIN)/python benchmarks/sweep_breakdown.py --size 1000000 --out benchmarks/results
	$(BIN)/python benchmarks/refit_sample.py --size 10000000 --k 8 --out benchmarks/results
	$(BIN)/python benchmarks/refit_sample.py --size 100000000 --k 8 --algorithms bisecting_kmeans --no-other-seed --name refit_sample_100m --out benchmarks/results
	$(BIN)/python benchmarks/features_peer.py --size 10000000 --out benchmarks/results
	$(BIN)/python benchmarks/features_peer.py --size 100000000 --repeats 1 --skip-in-session --name features_peer_100m --out benchmarks/results
	$(BIN)/python benchmarks/stage_profile.py --size 10000000 --training --out benchmarks/results
	$(BIN)/python benchmarks/stage_profile.py --size 100000000 --training --out benchmarks/results
	$(BIN)/python benchmarks/planted.py --set training.restarts=1 --out benchmarks/results
	$(BIN)/python benchmarks/planted_rules.py benchmarks/results/planted.json --out benchmarks/results
	$(BIN)/python benchmarks/real_stability.py --out benchmarks/results
	$(BIN)/python benchmarks/density.py --customers 5000000 --out benchmarks/results
	$(BIN)/python benchmarks/clv.py --features /tmp/segmentation-bench/100000000/features --synthetic 5000000 --out benchmarks/results

lint: install
	$(BIN)/ruff check segmentation jobs tests benchmarks
	$(BIN)/ruff format --check segmentation jobs tests benchmarks

clean:
	rm -rf data reports mlruns mlartifacts mlflow.db spark-warehouse metastore_db derby.log .pytest_cache
