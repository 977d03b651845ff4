# Entry points: `make run` (the main job on the bundled example), `make test`, `make results`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXAMPLE := examples/monuseg-breast-crop

.PHONY: install run test lint clean results

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/nucseg segment $(EXAMPLE)/images/*.png --out out/example --overwrite
	$(BIN)/nucseg evaluate --dataset $(EXAMPLE)

test: install
	$(BIN)/pytest -q

# every results file the README and docs quote, from a clean tree (hours; see --list, --only)
results: install
	$(BIN)/python benchmarks/regenerate.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf out .pytest_cache .ruff_cache
