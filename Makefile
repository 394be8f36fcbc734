# Two quick-start commands: `make demo` and `make test`. Both create .venv
# with pip from the pinned set in requirements/ when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mmdmpt-installed
REQS := requirements/runtime.txt requirements/tests.txt requirements/constraints.txt setup.py

.PHONY: demo test lint format install clean-demo

$(STAMP): $(REQS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c requirements/constraints.txt -r requirements/runtime.txt -r requirements/tests.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) tools/demo.py

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -n 2 --dist loadfile -q

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean-demo:
	rm -rf data/synthetic_demo work_dirs/demo checkpoints/demo
