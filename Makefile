# Every target bootstraps its own virtual environment; nothing is set up by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo demo-flask bench bench-smoke clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check shadow_middleware tests examples bench
	$(BIN)/ruff format --check shadow_middleware tests examples bench
	$(BIN)/mypy --strict shadow_middleware
	bench/setup.sh
	$(BIN)/python -m bench.run --quick  # the bench harness cannot rot: bench-smoke
	tests/setup-browser.sh
	$(BIN)/pytest -q

demo: $(STAMP)
	$(BIN)/python -m examples.demo --example fastapi

demo-flask: $(STAMP)
	$(BIN)/python -m examples.demo --example flask

bench: $(STAMP)
	bench/setup.sh
	$(BIN)/python -m bench.run

bench-smoke: $(STAMP)
	bench/setup.sh
	$(BIN)/python -m bench.run --quick

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
