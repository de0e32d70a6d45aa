# Two commands do all the set-up on a fresh machine:
#   make demo   prepare .venv when missing, then run a search on the bundled digits example
#   make test   prepare .venv when missing, then run the test suite
#   make wheel  build dist/autocompress-*.whl (the presets ship inside it)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint wheel clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "torch==2.13.0" -e ".[dev,examples]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/autocompress search examples/digits/search.yaml --tracking-uri sqlite:///mlflow.db
	@echo "open runs/digits-cnn/report.html; 'mlflow ui' in this folder shows the tracked search"

# PYTEST_ARGS: e.g. "-rs" (CI lists skips), "-m faults" (the fault-injection suite alone)
test: $(STAMP)
	$(BIN)/ruff check autocompress tests benchmarks examples
	$(BIN)/pytest -q $(PYTEST_ARGS) tests

lint: $(STAMP)
	$(BIN)/ruff check autocompress tests benchmarks examples
	$(BIN)/ruff format --check autocompress tests benchmarks examples

wheel: $(STAMP)
	$(BIN)/pip wheel --no-deps --no-build-isolation -w dist .

clean:
	rm -rf runs mlflow.db examples/digits/.cache build dist
