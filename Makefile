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

# OpenSeadragon for `nucseg view`: the version pinned in package.json(-lock), from the npm
# registry, into node_modules/ (ignored; no third-party code in the repository)
node_modules/openseadragon/package.json: package.json package-lock.json
	@command -v npm >/dev/null || { echo "make install needs npm (Debian: apt-get install npm) for the viewer's OpenSeadragon" >&2; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(VENV)/.installed node_modules/openseadragon/package.json

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
