# Every target sets up what it needs: `make test` and `make demo` work on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install lint typecheck pytest test demo bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check orchestrator tests benchmarks
	$(VENV)/bin/ruff format --check orchestrator tests benchmarks

typecheck: $(STAMP)
	$(VENV)/bin/mypy --strict orchestrator benchmarks

pytest: $(STAMP)
	$(PY) -m pytest

test: lint typecheck pytest

demo: $(STAMP)
	bash scripts/demo.sh

# Loopback only; BENCH_ARGS passes options, e.g. BENCH_ARGS='--only throughput --runs 5'.
bench: $(STAMP)
	$(PY) -m benchmarks.bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
