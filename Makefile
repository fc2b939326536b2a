# Two entry points a newcomer needs: `make demo` and `make test`. Both install what they need.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo lint test kafka-start kafka-stop clean bench bench-quick chaos fuzz

$(STAMP): pyproject.toml testkit/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]' -e ./testkit
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m bridge demo

# Static gates (configured in pyproject.toml): lint rules and import order, types (strict on the
# core), and the import-layering contracts. `make test` runs them first, so CI does too.
lint: $(STAMP)
	$(VENV)/bin/ruff check bridge testkit tests
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: lint
	$(PY) -m pytest

# Benchmarks with same-run baselines (own local broker). `make bench QUICK=1` or `make bench-quick`
# is the smoke check (< 2 min); BENCH_ARGS passes more options (--only, --bootstrap, --profile).
bench: $(STAMP)
	$(PY) -m tests.benchmarks $(if $(QUICK),--quick) $(BENCH_ARGS)

bench-quick: $(STAMP)
	$(PY) -m tests.benchmarks --quick $(BENCH_ARGS)

# Long randomized fuzzing (the suite's fuzz tests are derandomized); FUZZ_EXAMPLES per test.
fuzz: $(STAMP)
	FUZZ_RANDOM=1 FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-3000} $(PY) -m pytest tests/fuzz -q -p no:cacheprovider

# `make chaos CLUSTER=1`: the cluster scenario (tests/chaos/cluster.py) instead of the single-process one.
chaos: $(STAMP)
	$(PY) -m tests.chaos.$(if $(CLUSTER),cluster,run) $(CHAOS_ARGS)

kafka-start:
	deploy/local/kafka.sh start

kafka-stop:
	deploy/local/kafka.sh stop

clean:
	rm -rf $(VENV) .kafka .state .pytest_cache .mypy_cache .ruff_cache .import_linter_cache .grimp_cache
