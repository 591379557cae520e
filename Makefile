# Two commands: `make demo` and `make test`. Both build .venv from scratch when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is installed first and alone, pinned, so no resolver ever picks a (multi-GB) CUDA build.
TORCH_SPEC ?= torch==2.13.0
PIP := $(BIN)/python -m pip install --disable-pip-version-check -q

.PHONY: demo test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.examples: pyproject.toml | $(BIN)/python
	$(PIP) "$(TORCH_SPEC)"
	$(PIP) -e ".[examples]"
	touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.examples
	$(PIP) -e ".[dev]"
	touch $@

demo: $(VENV)/.examples
	$(BIN)/hasten bench minilm
	$(BIN)/hasten profile minilm --batch-size 8 --top 5

test: $(VENV)/.dev
	$(BIN)/python -m pytest -q

bench: $(VENV)/.dev
	$(BIN)/python benchmarks/bench_backends.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
