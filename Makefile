# Two entry points a newcomer needs: `make demo` and `make test`. Both install what they need.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test kafka-start kafka-stop clean bench chaos

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m bridge demo

test: $(STAMP)
	$(PY) -m pytest

chaos: $(STAMP)
	$(PY) -m tests.chaos.run $(CHAOS_ARGS)

kafka-start:
	deploy/local/kafka.sh start

kafka-stop:
	deploy/local/kafka.sh stop

clean:
	rm -rf $(VENV) .kafka .state .pytest_cache
