# Two quick-start commands: `make demo` and `make test`. Both create .venv
# with pip from the pinned set in requirements/ when it is missing.
# The pinned set installs on Python 3.11 and newer (numpy 2.3 needs 3.11);
# pick another interpreter with `PYTHON=python3.12 make test`.
PYTHON ?= python3
MIN_PYTHON := 3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mmdmpt-installed
REQS := requirements/runtime.txt requirements/tests.txt requirements/faiss.txt requirements/deploy.txt \
	requirements/constraints.txt setup.py

.PHONY: demo test lint format install clean-demo check-python

check-python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null || \
	{ echo "mmdmpt: Python $(MIN_PYTHON)+ is needed; '$(PYTHON)' is $$($(PYTHON) --version 2>&1 || echo missing)." >&2; \
	  echo "  Install Python $(MIN_PYTHON) or newer and run e.g. 'PYTHON=python3.11 make test'." >&2; exit 2; }

$(STAMP): $(REQS)
	@test -x $(PY) || $(MAKE) -s --no-print-directory check-python
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c requirements/constraints.txt -r requirements/runtime.txt \
		-r requirements/tests.txt -r requirements/faiss.txt -r requirements/deploy.txt
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
